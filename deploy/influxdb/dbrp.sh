#!/bin/sh
# Runs once, after the influxdb image's first-start setup (org, bucket, admin token), with the
# influx CLI already pointed at the server. InfluxDB 2.7 gives every bucket a read-only
# "virtual" mapping by name; an explicit one keeps InfluxQL (the API's history reader and
# Grafana) explicit, listed by `influx v1 dbrp list`. The database is the bucket's name:
# scadawatch's reader queries the database named like its `bucket`.
set -eu
influx v1 dbrp create \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
    --db "$DOCKER_INFLUXDB_INIT_BUCKET" \
    --rp autogen \
    --default
