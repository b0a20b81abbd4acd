"""The alarm system: the ISA-18.2 store and journal, KPIs, webhooks, InfluxDB annotations."""
