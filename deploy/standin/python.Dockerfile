# Stand-in for python:3.11-slim built from Debian packages (deploy/build-images.sh).
# Same contract as the official image: python3/python and a working `python3 -m venv`.
# pip here is offline: it installs from /wheels, which build-images.sh fills on the
# host with the wheels skymesh's pyproject.toml needs.
ARG BASE
FROM ${BASE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python \
 && python3 -m venv /tmp/probe && rm -rf /tmp/probe
COPY wheels /wheels
ENV PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1
CMD ["python3"]
