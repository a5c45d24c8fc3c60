# Stand-in for zookeeper:3.9 built from Debian's zookeeper package (deploy/build-images.sh).
# Same contract as the official image: ZOO_* environment, /conf /data /datalog /logs,
# `zkServer.sh start-foreground` as the command and `zkServer.sh status` for health.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends zookeeper default-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /conf /data /datalog /logs \
 && chown zookeeper:zookeeper /conf /data /datalog /logs
ENV ZOO_CONF_DIR=/conf \
    ZOO_DATA_DIR=/data \
    ZOO_DATA_LOG_DIR=/datalog \
    ZOO_LOG_DIR=/logs \
    ZOO_TICK_TIME=2000 \
    ZOO_INIT_LIMIT=5 \
    ZOO_SYNC_LIMIT=2 \
    ZOO_AUTOPURGE_PURGEINTERVAL=0 \
    ZOO_AUTOPURGE_SNAPRETAINCOUNT=3 \
    ZOO_MAX_CLIENT_CNXNS=60 \
    ZOO_STANDALONE_ENABLED=true \
    ZOO_ADMINSERVER_ENABLED=true \
    PATH=/usr/share/zookeeper/bin:$PATH
COPY zookeeper-environment /usr/local/share/zookeeper-environment
COPY zookeeper-entrypoint.sh /usr/local/bin/
RUN cp /usr/local/share/zookeeper-environment "$(readlink -f /etc/zookeeper/conf)/environment"
VOLUME ["/data", "/datalog", "/logs"]
EXPOSE 2181 2888 3888 8080
ENTRYPOINT ["zookeeper-entrypoint.sh"]
CMD ["zkServer.sh", "start-foreground"]
