# One image for every pmkeeper role: serve, api, ingest (and later scheduler).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PMK_DATA_DIR=/var/lib/pmkeeper \
    PMK_API__HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY storage ./storage
COPY ingest ./ingest
COPY rules ./rules
COPY scheduler ./scheduler
COPY api ./api
COPY simulator ./simulator
COPY pmkeeper ./pmkeeper
RUN pip install --no-cache-dir . \
    && useradd --system --home /var/lib/pmkeeper pmkeeper \
    && mkdir -p /var/lib/pmkeeper && chown pmkeeper /var/lib/pmkeeper

USER pmkeeper
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
ENTRYPOINT ["pmkeeper"]
CMD ["serve"]
