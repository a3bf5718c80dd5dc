"""Alarm events: the ISA-18.2 life cycle, the open-alarm record, evidence clips, and their way out."""
