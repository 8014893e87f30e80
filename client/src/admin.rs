//! The admin client: topics and their configs, the cluster, consumer groups, offsets and lag.
//!
//! Topic requests (CreateTopics, DeleteTopics, IncrementalAlterConfigs) go to any broker (a
//! broker that is not the controller forwards them, as KRaft brokers do); DescribeConfigs goes
//! to any broker; group requests go to the group's coordinator. Every call retries retriable
//! errors through [`Cluster::retry`] and reports the rest with the broker and Kafka code.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AddRaftVoterRequest, AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListPartitionReassignmentsRequest, RemoveRaftVoterRequest, TopicName, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{BrokerMeta, ClientConfig, Cluster, TopicMeta};
use crate::consumer::group::{decode_assignment, Coordinator, GroupSettings};
use crate::consumer::{list_offsets, EARLIEST, LATEST};
use crate::error::{check_code, Error, Result};
use crate::producer::accumulator::TopicPartition;

/// The config resource type of a topic in DescribeConfigs and IncrementalAlterConfigs.
const TOPIC_RESOURCE: i8 = 2;
/// The config resource type of a broker (its id) or of the cluster-wide defaults (`""`).
const BROKER_RESOURCE: i8 = 4;

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partitions (`-1`: the broker's default).
    pub partitions: i32,
    /// Replication factor (`-1`: the broker's default).
    pub replication_factor: i16,
    /// Topic configs (`retention.ms`, `max.message.bytes`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// `name` with `partitions` partitions replicated `replication_factor` times.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// With this config set.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// Which offset of a partition [`Admin::list_offsets`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The log end (the next offset to be written).
    Latest,
    /// The first record with a timestamp at or after this one (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => EARLIEST,
            OffsetSpec::Latest => LATEST,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// One config of a topic or a broker as the broker describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The value (`None` for a sensitive or unset config).
    pub value: Option<String>,
    /// Whether it is the default (not set on the resource).
    pub is_default: bool,
    /// Whether it cannot be altered.
    pub read_only: bool,
}

/// A topic's metadata and configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partitions, leaders, replicas.
    pub meta: TopicMeta,
    /// Configs by name.
    pub configs: BTreeMap<String, ConfigEntry>,
}

/// The cluster as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The controller's node id.
    pub controller: Option<i32>,
    /// The brokers.
    pub brokers: Vec<BrokerMeta>,
}

/// A registered broker as DescribeCluster (v2, fenced brokers included) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    /// Its node id.
    pub node_id: i32,
    /// `host:port` of its Kafka listener.
    pub addr: String,
    /// Its rack, if it has one.
    pub rack: Option<String>,
    /// Not heard from within its session: stopped, or cut off from the controller.
    pub fenced: bool,
}

/// A partition move in flight, as ListPartitionReassignments reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReassignment {
    /// The partition.
    pub tp: TopicPartition,
    /// Every replica it holds now (the target first, then the replicas leaving).
    pub replicas: Vec<i32>,
    /// Target replicas that are joining.
    pub adding: Vec<i32>,
    /// Replicas that leave when the move is done.
    pub removing: Vec<i32>,
}

/// A group as ListGroups lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// Its state (`Stable`, `Empty`, ...).
    pub state: String,
}

/// One member of a described group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// Its member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// The host it connects from.
    pub client_host: String,
    /// Its assignment (decoded for consumer groups).
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its state.
    pub state: String,
    /// The assignor chosen (`range`, `cooperative-sticky`).
    pub protocol: String,
    /// The members.
    pub members: Vec<GroupMember>,
}

/// A partition's lag in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub tp: TopicPartition,
    /// The committed offset (`None`: nothing committed).
    pub committed: Option<i64>,
    /// The log end offset.
    pub log_end: i64,
    /// `log_end - committed` (the whole log when nothing is committed).
    pub lag: i64,
}

/// The admin client; cheap to share by reference.
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// Connects to the cluster.
    pub async fn new(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            cluster: Cluster::connect(config).await?,
        })
    }

    /// An admin client on an existing [`Cluster`].
    pub fn with_cluster(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    /// Creates a topic and waits until the metadata lists it.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let timeout_ms = self.timeout_ms();
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let configs = topic
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect();
                let req = CreateTopicsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(topic_name(&topic.name))
                        .with_num_partitions(topic.partitions)
                        .with_replication_factor(topic.replication_factor)
                        .with_configs(configs)]);
                let resp = conn.call(&req).await?;
                for t in &resp.topics {
                    check_code(t.error_code, conn.broker().clone(), "CreateTopics", || {
                        Some(context(&topic.name, t.error_message.as_ref()))
                    })?;
                }
                Ok(())
            })
            .await?;
        self.wait_for_topic(&topic.name, true).await
    }

    /// Deletes a topic and waits until the metadata no longer lists it.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let timeout_ms = self.timeout_ms();
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let version = conn.version::<DeleteTopicsRequest>()?;
                let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                if version >= 6 {
                    req.topics =
                        vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
                } else {
                    req.topic_names = vec![topic_name(name)];
                }
                let resp = conn.call_at(&req, version).await?;
                for t in &resp.responses {
                    check_code(t.error_code, conn.broker().clone(), "DeleteTopics", || {
                        Some(context(name, t.error_message.as_ref()))
                    })?;
                }
                Ok(())
            })
            .await?;
        self.wait_for_topic(name, false).await
    }

    /// The names of every topic (internal ones included).
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let meta = self.cluster.refresh_metadata().await?;
        Ok(meta.topics.keys().cloned().collect())
    }

    /// A topic's partitions and configs.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.cluster.refresh_metadata().await?;
        let meta = self.cluster.topic(name).await?;
        let configs = self.describe_configs(TOPIC_RESOURCE, name).await?;
        Ok(TopicDescription { meta, configs })
    }

    /// Sets (`Some`) or deletes back to the default (`None`) topic configs.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        self.alter_configs(TOPIC_RESOURCE, name, changes).await
    }

    /// A broker's configs (`Some(id)`), or the cluster-wide dynamic defaults (`None`, the
    /// default broker resource of `kafka-configs.sh --entity-default`, which also holds the
    /// cluster switches such as `partition.autobalancing.enable`).
    pub async fn describe_broker_config(
        &self,
        broker: Option<i32>,
    ) -> Result<BTreeMap<String, ConfigEntry>> {
        let name = broker.map(|b| b.to_string()).unwrap_or_default();
        self.describe_configs(BROKER_RESOURCE, &name).await
    }

    /// Sets (`Some`) or deletes (`None`) a broker's dynamic configs (`Some(id)`) or the
    /// cluster-wide ones (`None`).
    pub async fn alter_broker_config(
        &self,
        broker: Option<i32>,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        let name = broker.map(|b| b.to_string()).unwrap_or_default();
        self.alter_configs(BROKER_RESOURCE, &name, changes).await
    }

    /// DescribeConfigs of one resource, every key.
    async fn describe_configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<BTreeMap<String, ConfigEntry>> {
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let req = DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(StrBytes::from_string(name.to_string()))
                        .with_configuration_keys(None),
                ]);
                let resp = conn.call(&req).await?;
                let mut out = BTreeMap::new();
                for r in resp.results {
                    check_code(
                        r.error_code,
                        conn.broker().clone(),
                        "DescribeConfigs",
                        || {
                            Some(resource_context(
                                resource_type,
                                name,
                                r.error_message.as_ref(),
                            ))
                        },
                    )?;
                    for c in r.configs {
                        // Config sources: 5 is DEFAULT_CONFIG, 1 DYNAMIC_TOPIC_CONFIG.
                        let entry = ConfigEntry {
                            value: c.value.map(|v| v.to_string()),
                            is_default: c.config_source == 5,
                            read_only: c.read_only,
                        };
                        out.insert(c.name.to_string(), entry);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// IncrementalAlterConfigs of one resource: SET for `Some`, DELETE for `None`.
    async fn alter_configs(
        &self,
        resource_type: i8,
        name: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let configs = changes
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            // Operations: 0 SET, 1 DELETE.
                            .with_config_operation(if v.is_some() { 0 } else { 1 })
                            .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                    })
                    .collect();
                let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(StrBytes::from_string(name.to_string()))
                        .with_configs(configs),
                ]);
                let resp = conn.call(&req).await?;
                for r in &resp.responses {
                    check_code(
                        r.error_code,
                        conn.broker().clone(),
                        "IncrementalAlterConfigs",
                        || {
                            Some(resource_context(
                                resource_type,
                                name,
                                r.error_message.as_ref(),
                            ))
                        },
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Moves partitions to new replicas (first = preferred leader), or cancels their moves
    /// (`None`: back to the replicas they had), through AlterPartitionReassignments. Returns
    /// once the controller has recorded every move; [`Admin::list_partition_reassignments`]
    /// shows them until they are done.
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[(TopicPartition, Option<Vec<i32>>)],
    ) -> Result<()> {
        let timeout_ms = self.timeout_ms();
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for (tp, target) in moves {
            let p = ReassignablePartition::default()
                .with_partition_index(tp.partition)
                .with_replicas(
                    target
                        .as_ref()
                        .map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
                );
            match topics.last_mut() {
                Some(t) if t.name.as_str() == tp.topic => t.partitions.push(p),
                _ => topics.push(
                    ReassignableTopic::default()
                        .with_name(topic_name(&tp.topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(topics);
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                let what = "AlterPartitionReassignments";
                check_code(resp.error_code, conn.broker().clone(), what, || {
                    resp.error_message.as_ref().map(|m| m.to_string())
                })?;
                for t in &resp.responses {
                    for p in &t.partitions {
                        let tp = format!("{}-{}", t.name.as_str(), p.partition_index);
                        check_code(p.error_code, conn.broker().clone(), what, || {
                            Some(context(&tp, p.error_message.as_ref()))
                        })?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Every partition move in flight.
    pub async fn list_partition_reassignments(&self) -> Result<Vec<PartitionReassignment>> {
        let req = ListPartitionReassignmentsRequest::default().with_timeout_ms(self.timeout_ms());
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                check_code(
                    resp.error_code,
                    conn.broker().clone(),
                    "ListPartitionReassignments",
                    || resp.error_message.as_ref().map(|m| m.to_string()),
                )?;
                let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
                Ok(resp
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| PartitionReassignment {
                            tp: TopicPartition {
                                topic: t.name.to_string(),
                                partition: p.partition_index,
                            },
                            replicas: ids(&p.replicas),
                            adding: ids(&p.adding_replicas),
                            removing: ids(&p.removing_replicas),
                        })
                    })
                    .collect())
            })
            .await
    }

    /// Takes broker `node_id` out of the cluster (UnregisterBroker). Railyard drains it first:
    /// this returns once the decommission is recorded; every replica then moves off the
    /// broker, and once it holds none and is stopped it is unregistered (no longer listed by
    /// [`Admin::describe_brokers`]).
    pub async fn unregister_broker(&self, node_id: i32) -> Result<()> {
        let req = UnregisterBrokerRequest::default().with_broker_id(BrokerId(node_id));
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                check_code(
                    resp.error_code,
                    conn.broker().clone(),
                    "UnregisterBroker",
                    || resp.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .await
    }

    /// Promotes broker `node_id` to controller voter (AddRaftVoter, KIP-853); returns once the
    /// new configuration applied. Retries while another change is in flight or the broker's
    /// metadata log is catching up.
    pub async fn add_controller_voter(&self, node_id: i32) -> Result<()> {
        let cluster_id = self.cluster.metadata().cluster_id.clone();
        let req = AddRaftVoterRequest::default()
            .with_cluster_id(cluster_id.map(StrBytes::from_string))
            .with_timeout_ms(self.timeout_ms())
            .with_voter_id(node_id);
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                check_code(
                    resp.error_code,
                    conn.broker().clone(),
                    "AddRaftVoter",
                    || resp.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .await
    }

    /// Demotes controller voter `node_id` to a learner (RemoveRaftVoter, KIP-853); it stays a
    /// broker. Refused for the last voter, or when too few voters would be left caught up.
    pub async fn remove_controller_voter(&self, node_id: i32) -> Result<()> {
        let cluster_id = self.cluster.metadata().cluster_id.clone();
        let req = RemoveRaftVoterRequest::default()
            .with_cluster_id(cluster_id.map(StrBytes::from_string))
            .with_voter_id(node_id);
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                check_code(
                    resp.error_code,
                    conn.broker().clone(),
                    "RemoveRaftVoter",
                    || resp.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .await
    }

    /// Every registered broker, fenced ones included (DescribeCluster v2, KIP-1073).
    pub async fn describe_brokers(&self) -> Result<Vec<BrokerStatus>> {
        let req = DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true);
        self.cluster
            .retry(|| async {
                let conn = self.cluster.any_connection().await?;
                let resp = conn.call(&req).await?;
                check_code(
                    resp.error_code,
                    conn.broker().clone(),
                    "DescribeCluster",
                    || resp.error_message.as_ref().map(|m| m.to_string()),
                )?;
                Ok(resp
                    .brokers
                    .iter()
                    .map(|b| BrokerStatus {
                        node_id: b.broker_id.0,
                        addr: format!("{}:{}", b.host.as_str(), b.port),
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                        fenced: b.is_fenced,
                    })
                    .collect())
            })
            .await
    }

    /// The brokers, the controller and the cluster id (fresh metadata).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let meta = self.cluster.refresh_metadata().await?;
        Ok(ClusterDescription {
            cluster_id: meta.cluster_id.clone(),
            controller: meta.controller,
            brokers: meta.brokers.values().cloned().collect(),
        })
    }

    /// Every group on every broker (each broker lists the groups it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let meta = self.cluster.refresh_metadata().await?;
        let mut out = Vec::new();
        for id in meta.brokers.keys() {
            let listed = self
                .cluster
                .retry(|| async {
                    let conn = self.cluster.connection(*id).await?;
                    let resp = conn.call(&ListGroupsRequest::default()).await?;
                    check_code(resp.error_code, conn.broker().clone(), "ListGroups", || {
                        None
                    })?;
                    Ok(resp.groups)
                })
                .await?;
            out.extend(listed.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// A group's state, protocol and members with their assignments.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator(group_id);
        self.cluster
            .retry(|| async {
                let conn = coordinator.connection_for_admin().await?;
                let req = DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
                let resp = conn
                    .call(&req)
                    .await
                    .inspect_err(|e| coordinator.forget_on(e))?;
                let g = resp
                    .groups
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Protocol {
                        broker: conn.broker().clone(),
                        reason: "DescribeGroups answered no group".into(),
                    })?;
                check_code(
                    g.error_code,
                    conn.broker().clone(),
                    "DescribeGroups",
                    || Some(format!("group {group_id:?}")),
                )
                .inspect_err(|e| coordinator.forget_on(e))?;
                let consumer = g.protocol_type.as_str() == "consumer";
                Ok(GroupDescription {
                    group_id: g.group_id.0.to_string(),
                    state: g.group_state.to_string(),
                    protocol: g.protocol_data.to_string(),
                    members: g
                        .members
                        .into_iter()
                        .map(|m| GroupMember {
                            member_id: m.member_id.to_string(),
                            instance_id: m.group_instance_id.map(|i| i.to_string()),
                            client_id: m.client_id.to_string(),
                            client_host: m.client_host.to_string(),
                            assignment: if consumer {
                                decode_assignment(m.member_assignment).unwrap_or_default()
                            } else {
                                Vec::new()
                            },
                        })
                        .collect(),
                })
            })
            .await
    }

    /// Deletes a group (it must have no members: GROUP_NOT_EMPTY otherwise).
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let coordinator = self.coordinator(group_id);
        self.cluster
            .retry(|| async {
                let conn = coordinator.connection_for_admin().await?;
                let req = DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
                let resp = conn
                    .call(&req)
                    .await
                    .inspect_err(|e| coordinator.forget_on(e))?;
                for r in &resp.results {
                    check_code(r.error_code, conn.broker().clone(), "DeleteGroups", || {
                        Some(format!("group {group_id:?}"))
                    })
                    .inspect_err(|e| coordinator.forget_on(e))?;
                }
                Ok(())
            })
            .await
    }

    /// Sets a group's committed offsets (the group must have no active members, or the
    /// coordinator refuses with UNKNOWN_MEMBER_ID / REBALANCE_IN_PROGRESS).
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        self.coordinator(group_id).commit(offsets).await
    }

    /// The log end offset of each partition of `topic` (what a reset "to latest" commits).
    pub async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let found = self.list_offsets(topic, OffsetSpec::Latest).await?;
        Ok(found
            .into_iter()
            .map(|(tp, o)| (tp, o.unwrap_or(0)))
            .collect())
    }

    /// ListOffsets for every partition of `topic`: the offset `spec` names, or `None` for a
    /// timestamp later than every record of the partition.
    pub async fn list_offsets(
        &self,
        topic: &str,
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let meta = self.cluster.topic(topic).await?;
        let time = spec.wire();
        let times = meta
            .partitions
            .iter()
            .map(|p| (TopicPartition::new(topic, p.partition), time))
            .collect();
        let found = list_offsets(&self.cluster, &times).await?;
        Ok(found
            .into_iter()
            .map(|(tp, o)| (tp, o.map(|(offset, _)| offset)))
            .collect())
    }

    /// Per partition of `topic`: the group's committed offset, the log end, and the lag.
    pub async fn consumer_lag(&self, group_id: &str, topic: &str) -> Result<Vec<PartitionLag>> {
        let ends = self.end_offsets(topic).await?;
        let tps: Vec<TopicPartition> = ends.keys().cloned().collect();
        let committed = self.coordinator(group_id).committed(&tps).await?;
        Ok(ends
            .into_iter()
            .map(|(tp, log_end)| {
                let c = committed.get(&tp).copied().flatten();
                PartitionLag {
                    lag: log_end - c.unwrap_or(0),
                    committed: c,
                    log_end,
                    tp,
                }
            })
            .collect())
    }

    /// Every offset `group_id` has committed, on any topic (partitions whose commit was
    /// deleted are left out).
    pub async fn group_offsets(&self, group_id: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let all = self.coordinator(group_id).committed_all().await?;
        Ok(all
            .into_iter()
            .filter_map(|(tp, o)| o.map(|o| (tp, o)))
            .collect())
    }

    /// The cluster this admin client talks to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn coordinator(&self, group_id: &str) -> Coordinator {
        Coordinator::new(self.cluster.clone(), GroupSettings::for_admin(group_id))
    }

    fn timeout_ms(&self) -> i32 {
        self.cluster
            .config()
            .request_timeout_ms
            .min(i32::MAX as u64) as i32
    }

    /// Waits (within `default_api_timeout_ms`) until the metadata lists `name` (or not).
    async fn wait_for_topic(&self, name: &str, present: bool) -> Result<()> {
        let within = std::time::Duration::from_millis(self.cluster.config().default_api_timeout_ms);
        let deadline = std::time::Instant::now() + within;
        loop {
            let meta = self.cluster.refresh_metadata().await?;
            let listed = meta
                .topic(name)
                .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()));
            if listed == present || (!present && meta.topic(name).is_none()) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    broker: crate::error::BrokerRef {
                        addr: "cluster".into(),
                        node_id: None,
                    },
                    api: if present {
                        "CreateTopics"
                    } else {
                        "DeleteTopics"
                    },
                    after: within,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The error context of a config resource: the topic, the broker or the cluster.
fn resource_context(resource_type: i8, name: &str, message: Option<&StrBytes>) -> String {
    match (resource_type, name) {
        (TOPIC_RESOURCE, _) => context(name, message),
        (_, "") => with_message("the cluster-wide broker configs".into(), message),
        _ => with_message(format!("broker {name}"), message),
    }
}

fn with_message(what: String, message: Option<&StrBytes>) -> String {
    match message {
        Some(m) => format!("{what}: {m}"),
        None => what,
    }
}

fn context(name: &str, message: Option<&StrBytes>) -> String {
    match message {
        Some(m) => format!("topic {name:?}: {m}"),
        None => format!("topic {name:?}"),
    }
}
