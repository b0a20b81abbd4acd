"""IEC 60870-5-104 client (controlling station), monitoring direction: see README.md."""
