"""The running agent: machine streams, the processing loop, operator commands, reloads."""
