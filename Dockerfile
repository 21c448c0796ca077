# Skein: one image for the control daemon, the sidecar and the CLI.
#   docker build -t skein .
#   docker run --rm skein control --etcd etcd:2379 --listen 0.0.0.0:15010 --admin 0.0.0.0:15014
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY skein ./skein
COPY sidecar ./sidecar
COPY control ./control
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --system --uid 1337 skein
USER skein
EXPOSE 15000 15001 15014 15006 15010
ENTRYPOINT ["skein"]
CMD ["--help"]
