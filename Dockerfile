# One image for every scadawatch service; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scadawatch ./scadawatch
COPY gateway ./gateway
COPY anomaly ./anomaly
COPY api ./api
COPY simulators ./simulators
RUN pip install --no-cache-dir ".[sim]"
ENTRYPOINT ["scadawatch"]
