# contactpulse worker and simulator image.
#   docker build -t contactpulse .
#   docker run contactpulse worker | docker run contactpulse simulate --rate 5
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what `pip install .` needs (pyproject names README.md as the long description), so a change to
# tests or docs does not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY metrics ./metrics
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/contactpulse --create-home contactpulse

# Faust keeps its local table state here; /metrics must be reachable from Prometheus in other containers.
ENV CONTACTPULSE_DATA_DIR=/var/lib/contactpulse \
    CONTACTPULSE_WEB_HOST=0.0.0.0 \
    CONTACTPULSE_WEB_PORT=6066
USER contactpulse
WORKDIR /var/lib/contactpulse
EXPOSE 6066

ENTRYPOINT ["contactpulse"]
CMD ["worker"]
