#!/bin/sh
# Creates the loyalty topics with the settings the cluster needs: partitions, replication
# factor and min.insync.replicas. Topics that exist keep their partitions and replicas
# (a warning says when they differ) and get min.insync.replicas set. Safe to run again.
#
# Run in the official apache/kafka image, by the kafka-topics Job (deploy/base) and by the
# kafka-topics service of docker-compose.yml. The services create a missing topic
# themselves, with KAFKA_PARTITIONS and KAFKA_REPLICATION_FACTOR but without
# min.insync.replicas, so run this before them.
set -eu

bin=${KAFKA_BIN:-/opt/kafka/bin}
bootstrap=${KAFKA_BOOTSTRAP_SERVERS:?set KAFKA_BOOTSTRAP_SERVERS}
partitions=${KAFKA_PARTITIONS:-6}
replication=${KAFKA_REPLICATION_FACTOR:-3}
min_insync=${KAFKA_MIN_INSYNC_REPLICAS:-2}

ledger=${LEDGER_TOPIC:-loyalty.ledger.events.v1}
tiers=${TIERS_TOPIC:-loyalty.tiers.events.v1}
campaigns=${CAMPAIGNS_TOPIC:-loyalty.campaigns.events.v1}
notifications=${NOTIFICATIONS_TOPIC:-loyalty.notifications.events.v1}

ensure() { # ensure TOPIC PARTITIONS
    "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
        --topic "$1" --partitions "$2" --replication-factor "$replication" \
        --config "min.insync.replicas=$min_insync"
    "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --alter --entity-type topics \
        --entity-name "$1" --add-config "min.insync.replicas=$min_insync"
    described=$("$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --describe --topic "$1")
    echo "$described" | head -n 1
    count=$(echo "$described" | sed -n 's/.*PartitionCount: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
    replicas=$(echo "$described" | sed -n 's/.*ReplicationFactor: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
    if [ "$count" != "$2" ]; then
        # Never added here: the key decides the partition, so adding partitions would
        # move a member's later events away from its earlier ones (docs/events.md).
        echo "warning: $1 has $count partitions, not $2; left as it is" >&2
    fi
    if [ "$replicas" != "$replication" ]; then
        echo "warning: $1 has replication factor $replicas, not $replication;" \
            "change it with kafka-reassign-partitions.sh" >&2
    fi
}

# Published by the relay (ledger), the rules service's outbox (tiers, campaigns) and the
# notifier's outbox (notifications); keyed by member id.
for topic in "$ledger" "$tiers" "$campaigns" "$notifications"; do
    ensure "$topic" "$partitions"
done
# Dead-letter topics of the consumer base: one partition each, as the consumers create
# them. The ledger topic is read by rules and notifier, tiers and campaigns by
# `loyalty follow` and the notifier; nothing in this repository reads notifications.
for topic in "$ledger" "$tiers" "$campaigns"; do
    ensure "$topic.dlq" 1
done
echo "topics ready on $bootstrap"
