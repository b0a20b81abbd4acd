"""`scadawatch central`: the multi-site control room. A Sparkplug B primary host application
(host.py) that files every site's births, data and alarms (links.py) into per-site embedded
historians and one alarm list, served by the site API with the site in every tag (app.py,
reader.py). Imports gateway and api; nothing imports it but the command line."""
