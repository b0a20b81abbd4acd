"""One module per `scadawatch` subcommand, each loaded by name (cli.py)
only when it runs; alarm_plot.py is `evaluate --plot`."""
