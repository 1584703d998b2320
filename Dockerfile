# One image for ingest, rollups, api and the simulator; the command picks the process.
# The console's libraries and Swagger UI come from the npm registry at build time (never
# committed).
FROM node:20-slim AS frontend
WORKDIR /frontend
COPY frontend/package.json frontend/package-lock.json frontend/copy-vendor.mjs ./
RUN mkdir -p /api/static && npm ci --ignore-scripts --no-audit --no-fund && npm run build

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY devices devices
COPY ingest ingest
COPY rollups rollups
COPY api api
COPY --from=frontend /api/static/vendor api/static/vendor
COPY simulators simulators
COPY migrations migrations
COPY stack stack
RUN pip install --no-cache-dir . && useradd --system --uid 10001 alatau
USER alatau
CMD ["python", "-m", "api"]
