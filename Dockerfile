# One image for every scadawatch service; the command picks the role.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scadawatch ./scadawatch
COPY gateway ./gateway
COPY anomaly ./anomaly
COPY api ./api
COPY simulators ./simulators
COPY timegrammar ./timegrammar
COPY central ./central
RUN pip install --no-cache-dir ".[sim]"
# Not root; /data exists owned by the service user so a fresh named volume mounted there
# inherits that owner (the gateway writes its spool, historian and status there).
RUN useradd --system --uid 10001 --home-dir /data scadawatch \
    && mkdir /data && chown scadawatch:scadawatch /data
USER scadawatch
ENTRYPOINT ["scadawatch"]
