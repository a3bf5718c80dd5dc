"""Enrolment of normal sound into a machine's memory bank, threshold fitting, reports and plots,
and DCASE-style evaluation."""
