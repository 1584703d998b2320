# One image for ingest, api and the simulator; the command picks the process.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY devices devices
COPY ingest ingest
COPY api api
COPY simulators simulators
COPY migrations migrations
COPY stack stack
RUN pip install --no-cache-dir . && useradd --system --uid 10001 alatau
USER alatau
CMD ["python", "-m", "api"]
