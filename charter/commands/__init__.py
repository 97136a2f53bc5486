"""One module per ``charter`` command: where a composed config (or plain argv) becomes objects and
the work is called. The stages, judges and trainers themselves never read a config."""
