//! The table of the Kafka APIs this listener implements, and the contract of their handlers.
//!
//! [`Api::ALL`] is the one list: ApiVersions advertises its version ranges, the dispatcher
//! refuses any (api, version) outside them, the guard walks the body layout its row names, and
//! the row's handler answers. A handler is a [`Handler`] in this folder, one file per API
//! family: it names its kafka-protocol request type (which fixes the response type and the API
//! key), describes the request's field layout for the guard, turns a decoded request into a
//! typed response through the [`Broker`], and lists the response's error codes for metrics.
//! Adding an API is a new handler file plus one `mod` line and one row here.
//!
//! Handlers never see bytes: decoding, version checks and encoding happen around them. A
//! handler sets only fields that exist in the version it answers, because kafka-protocol
//! refuses to encode a non-default value into a version that lacks the field.
//!
//! - [`api_versions`]: ApiVersions, listing the table.
//! - [`metadata`]: Metadata and DescribeCluster.
//! - [`produce`]: Produce, one task per partition.
//! - [`fetch`]: Fetch, one core request per pass, with the long poll.
//! - [`offsets`]: ListOffsets and OffsetForLeaderEpoch.
//! - [`topics`]: CreateTopics and DeleteTopics (the controller APIs are forwarded to the
//!   controller: [`crate::kafka::forward`]).
//! - [`partitions`]: CreatePartitions, growing a topic.
//! - [`reassignments`]: AlterPartitionReassignments and ListPartitionReassignments (moves).
//! - [`brokers`]: UnregisterBroker (decommission: drain, then unregister).
//! - [`quorum`]: AddRaftVoter and RemoveRaftVoter (controller quorum changes).
//! - [`log_dirs`]: DescribeLogDirs, the data dir and its partitions.
//! - [`elect_leaders`]: ElectLeaders (preferred elections).
//! - [`delete_records`]: DeleteRecords, through each partition's raft log.
//! - [`alter_configs`]: AlterConfigs and IncrementalAlterConfigs (topics).
//! - [`producers`]: InitProducerId (idempotent producers).
//! - [`configs`]: DescribeConfigs, from the cluster view.
//! - [`coordinator`]: FindCoordinator, from the cluster view.
//! - [`groups`]: JoinGroup, SyncGroup, Heartbeat and LeaveGroup (classic group membership).
//! - [`group_offsets`]: OffsetCommit, OffsetFetch and OffsetDelete.
//! - [`group_admin`]: ListGroups, DescribeGroups and DeleteGroups.
//! - [`common`]: what several handlers share (partition errors, Kafka codes of core errors,
//!   sending group requests).

pub mod alter_configs;
pub mod api_versions;
pub mod brokers;
pub mod common;
pub mod configs;
pub mod coordinator;
pub mod delete_records;
pub mod elect_leaders;
pub mod fetch;
pub mod group_admin;
pub mod group_offsets;
pub mod groups;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod partitions;
pub mod produce;
pub mod producers;
pub mod quorum;
pub mod reassignments;
pub mod topics;

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Request as KafkaRequest;

use super::codec::{decode_body, encode_response};
use super::guard::{GuardError, Layout, Reader};
use super::{ConnectionError, KafkaConfig};
use crate::broker::Broker;

impl<B: Broker> Api<B> {
    /// Every API we implement, with the inclusive version range advertised for each, in the
    /// order ApiVersions lists them. Generic over the broker only because the handler column
    /// is; the other columns are the same for every `B`.
    pub const ALL: &'static [Api<B>] = &[
        Api::of::<produce::Produce>(ApiKey::Produce, 3, 12),
        Api::of::<fetch::Fetch>(ApiKey::Fetch, 4, 12),
        // v7 adds the MAX_TIMESTAMP (-3) spec, which the core cannot answer.
        Api::of::<offsets::ListOffsets>(ApiKey::ListOffsets, 1, 10),
        Api::of::<metadata::Metadata>(ApiKey::Metadata, 0, 12),
        Api::of::<offsets::OffsetForLeaderEpoch>(ApiKey::OffsetForLeaderEpoch, 2, 4),
        Api::of::<api_versions::ApiVersions>(ApiKey::ApiVersions, 0, 4),
        // v2 lists fenced brokers when asked (KIP-1073).
        Api::of::<metadata::DescribeCluster>(ApiKey::DescribeCluster, 0, 2),
        Api::of::<topics::CreateTopics>(ApiKey::CreateTopics, 2, 7),
        // v6 names topics by name or by id.
        Api::of::<topics::DeleteTopics>(ApiKey::DeleteTopics, 1, 6),
        // TOPIC resources (defaults only, see `configs`) and BROKER resources (no configs).
        Api::of::<configs::DescribeConfigs>(ApiKey::DescribeConfigs, 1, 4),
        Api::of::<alter_configs::AlterConfigs>(ApiKey::AlterConfigs, 0, 2),
        Api::of::<alter_configs::IncrementalAlterConfigs>(ApiKey::IncrementalAlterConfigs, 0, 1),
        Api::of::<partitions::CreatePartitions>(ApiKey::CreatePartitions, 0, 3),
        // v1 adds allow_replication_factor_change (KIP-860): a client that sets it false
        // needs v1; the default (true) works over v0.
        Api::of::<reassignments::AlterPartitionReassignments>(
            ApiKey::AlterPartitionReassignments,
            0,
            0,
        ),
        Api::of::<reassignments::ListPartitionReassignments>(
            ApiKey::ListPartitionReassignments,
            0,
            0,
        ),
        Api::of::<brokers::UnregisterBroker>(ApiKey::UnregisterBroker, 0, 0),
        Api::of::<quorum::AddRaftVoter>(ApiKey::AddRaftVoter, 0, 0),
        Api::of::<quorum::RemoveRaftVoter>(ApiKey::RemoveRaftVoter, 0, 0),
        Api::of::<log_dirs::DescribeLogDirs>(ApiKey::DescribeLogDirs, 1, 4),
        Api::of::<elect_leaders::ElectLeaders>(ApiKey::ElectLeaders, 0, 2),
        Api::of::<delete_records::DeleteRecords>(ApiKey::DeleteRecords, 0, 2),
        Api::of::<producers::InitProducerId>(ApiKey::InitProducerId, 0, 5),
        // Group keys only; v6 adds share-group keys, which are INVALID_REQUEST like transactions.
        Api::of::<coordinator::FindCoordinator>(ApiKey::FindCoordinator, 0, 6),
        // v4+: MEMBER_ID_REQUIRED first (KIP-394); v5+ static members; v9 skip_assignment.
        Api::of::<groups::JoinGroup>(ApiKey::JoinGroup, 0, 9),
        Api::of::<groups::SyncGroup>(ApiKey::SyncGroup, 0, 5),
        Api::of::<groups::Heartbeat>(ApiKey::Heartbeat, 0, 4),
        Api::of::<groups::LeaveGroup>(ApiKey::LeaveGroup, 0, 5),
        // v0-1 are gone in Kafka 4 (KIP-896); kafka-protocol 0.18 has no v10 (topic ids).
        Api::of::<group_offsets::OffsetCommit>(ApiKey::OffsetCommit, 2, 9),
        // v0 is gone in Kafka 4; v8+ batch groups; kafka-protocol 0.18 has no v10 request.
        Api::of::<group_offsets::OffsetFetch>(ApiKey::OffsetFetch, 1, 9),
        Api::of::<group_offsets::OffsetDelete>(ApiKey::OffsetDelete, 0, 0),
        // v4+ states filter, v5 types filter (only "classic" groups exist).
        Api::of::<group_admin::ListGroups>(ApiKey::ListGroups, 0, 5),
        // v6 answers unknown groups GROUP_ID_NOT_FOUND instead of Dead (KIP-1043): not yet.
        Api::of::<group_admin::DescribeGroups>(ApiKey::DescribeGroups, 0, 5),
        Api::of::<group_admin::DeleteGroups>(ApiKey::DeleteGroups, 0, 2),
    ];

    /// The row of `api` if we advertise `version` of it.
    pub fn find(api: ApiKey, version: i16) -> Option<&'static Api<B>> {
        // Two dozen rows: a scan is as fast as any index.
        Self::ALL
            .iter()
            .find(|row| row.key == api && (row.min..=row.max).contains(&version))
    }

    /// Runs the row's handler on a request whose header has been read and whose body has
    /// passed the guard; `None`: send nothing.
    pub async fn run(&self, call: Call<'_, B>) -> Result<Option<BytesMut>, ConnectionError> {
        (self.handler)(call).await
    }
}

/// One row of [`Api::ALL`].
pub struct Api<B> {
    pub key: ApiKey,
    /// The oldest version advertised.
    pub min: i16,
    /// The newest version advertised.
    pub max: i16,
    /// The request's field layout, walked by the guard before kafka-protocol decodes it.
    pub layout: Layout,
    /// The handler, wrapped to decode the request and encode the response.
    handler: HandlerFn<B>,
    /// A request of every advertised version with every array non-empty, for the guard's
    /// round-trip test.
    #[cfg(test)]
    pub sample: fn(i16) -> BytesMut,
}

/// One Kafka API: how its request is laid out and how it is answered.
pub trait Handler {
    /// The kafka-protocol request; its `KEY` is the API key and its `Response` the answer.
    type Request: KafkaRequest + Send + 'static;

    /// Walks every field of a `version` request body but the trailing top-level tagged fields,
    /// which the guard reads itself (skipping them: the guard keeps no values), so that the
    /// guard can refuse impossible array counts before decoding.
    fn layout(r: &mut Reader<'_>, version: i16) -> Result<(), GuardError>;

    /// Answers a decoded request.
    fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: Self::Request,
    ) -> impl Future<Output = Answer<ResponseOf<Self>>> + Send;

    /// Appends every error code of a response (top-level, per topic, per partition), zeros
    /// included. Read back from the response rather than threaded through the handler, so that
    /// whatever the client is told is what metrics count.
    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>);

    /// A `version` request with every array non-empty (see [`Api::sample`]).
    #[cfg(test)]
    fn sample(version: i16) -> Self::Request;
}

/// The response type of a handler's request.
pub type ResponseOf<H> = <<H as Handler>::Request as KafkaRequest>::Response;

/// What a handler is given besides the request.
pub struct Ctx<'a, B> {
    pub broker: &'a B,
    pub config: &'a KafkaConfig,
    /// The request's (advertised) version, which the response is encoded in.
    pub version: i16,
    /// The request header's client id ("" when null).
    pub client_id: &'a str,
    /// The client's address as Kafka reports it ("/10.0.0.1").
    pub client_host: &'a str,
}

/// What the connection does with a handler's answer.
#[derive(Debug)]
pub enum Answer<R> {
    /// Send this response.
    Reply(R),
    /// Send nothing: the client reads no response (an acks=0 produce).
    NoReply,
    /// Send nothing and close the connection.
    Close(ConnectionError),
}

/// One request as the dispatcher hands it to a row.
pub struct Call<'a, B> {
    pub broker: &'a B,
    pub config: &'a KafkaConfig,
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// The request header's client id ("" when null).
    pub client_id: &'a str,
    /// The client's address as Kafka reports it ("/10.0.0.1").
    pub client_host: &'a str,
    /// The request body (the bytes after the header).
    pub body: Bytes,
    /// Where the response's error codes are appended.
    pub codes: &'a mut Vec<i16>,
}

type Running<'a> =
    Pin<Box<dyn Future<Output = Result<Option<BytesMut>, ConnectionError>> + Send + 'a>>;
type HandlerFn<B> = for<'a> fn(Call<'a, B>) -> Running<'a>;

impl<B: Broker> Api<B> {
    /// The row of handler `H`. Evaluated at compile time, so a row whose key is not its
    /// handler's request fails the build.
    const fn of<H: Handler>(key: ApiKey, min: i16, max: i16) -> Api<B> {
        assert!(
            key as i16 == <H::Request as KafkaRequest>::KEY,
            "a row's api key differs from its handler's request"
        );
        assert!(0 <= min && min <= max, "a row's version range is empty");
        Api {
            key,
            min,
            max,
            layout: H::layout,
            handler: run::<B, H>,
            #[cfg(test)]
            sample: sample::<H>,
        }
    }
}

/// Decodes the body as `H`'s request, lets `H` answer it and encodes the response.
fn run<B: Broker, H: Handler>(call: Call<'_, B>) -> Running<'_> {
    Box::pin(async move {
        let Call {
            broker,
            config,
            api,
            version,
            correlation_id,
            client_id,
            client_host,
            mut body,
            codes,
        } = call;
        let request: H::Request = decode_body(&mut body, api, version)?;
        let ctx = Ctx {
            broker,
            config,
            version,
            client_id,
            client_host,
        };
        match H::handle(ctx, request).await {
            Answer::Reply(response) => {
                H::error_codes(&response, codes);
                Ok(Some(encode_response(
                    api,
                    version,
                    correlation_id,
                    &response,
                )?))
            }
            Answer::NoReply => Ok(None),
            Answer::Close(e) => Err(e),
        }
    })
}

#[cfg(test)]
fn sample<H: Handler>(version: i16) -> BytesMut {
    use kafka_protocol::protocol::Encodable;
    let mut buf = BytesMut::new();
    H::sample(version)
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encoding the sample of api {}: {e}", H::Request::KEY));
    buf
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::runtime::NodeHandle;

    #[test]
    fn test_table_lists_each_api_once() {
        // One row per API, so ApiVersions lists each once and `find` has one answer.
        let keys: BTreeSet<i16> = Api::<NodeHandle>::ALL
            .iter()
            .map(|a| a.key as i16)
            .collect();
        assert_eq!(keys.len(), Api::<NodeHandle>::ALL.len());
        assert!(Api::<NodeHandle>::find(ApiKey::Fetch, 12).is_some());
        assert!(Api::<NodeHandle>::find(ApiKey::Fetch, 13).is_none());
        // The group APIs, with Kafka 4's floors (KIP-896) and kafka-protocol 0.18's ceilings.
        let groups = [
            (ApiKey::FindCoordinator, 0, 6),
            (ApiKey::JoinGroup, 0, 9),
            (ApiKey::SyncGroup, 0, 5),
            (ApiKey::Heartbeat, 0, 4),
            (ApiKey::LeaveGroup, 0, 5),
            (ApiKey::OffsetCommit, 2, 9),
            (ApiKey::OffsetFetch, 1, 9),
            (ApiKey::OffsetDelete, 0, 0),
            (ApiKey::ListGroups, 0, 5),
            (ApiKey::DescribeGroups, 0, 5),
            (ApiKey::DeleteGroups, 0, 2),
        ];
        for (api, min, max) in groups {
            let row = Api::<NodeHandle>::find(api, min).expect("a group api row");
            assert_eq!((row.min, row.max), (min, max), "{api:?}");
        }
        // Transactions and the KIP-848 consumer protocol are not implemented.
        assert!(Api::<NodeHandle>::find(ApiKey::TxnOffsetCommit, 3).is_none());
        assert!(Api::<NodeHandle>::find(ApiKey::OffsetCommit, 1).is_none());
        assert!(Api::<NodeHandle>::find(ApiKey::OffsetFetch, 0).is_none());
        assert!(Api::<NodeHandle>::find(ApiKey::DescribeGroups, 6).is_none());
        assert!(Api::<NodeHandle>::find(ApiKey::ConsumerGroupHeartbeat, 0).is_none());
    }

    #[test]
    fn test_compatibility_doc_lists_every_api() {
        // docs/kafka-compatibility.md has one row per advertised API with the same versions.
        let doc = include_str!("../../../../docs/kafka-compatibility.md");
        for api in Api::<NodeHandle>::ALL {
            let versions = if api.min == api.max {
                format!("{}", api.min)
            } else {
                format!("{}–{}", api.min, api.max)
            };
            let row = format!("| {:?} | {} | {versions} |", api.key, api.key as i16);
            assert!(
                doc.contains(&row),
                "docs/kafka-compatibility.md lacks the row {row}"
            );
        }
    }
}
