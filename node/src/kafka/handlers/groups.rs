//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: the classic group membership protocol.
//!
//! Each request becomes one [`GroupRequest`] for the coordinator of the group's
//! `__consumer_offsets` partition, which the node routes (answering NOT_COORDINATOR when this
//! broker does not lead that partition); the reply maps field for field onto the Kafka
//! response of the version asked. A JoinGroup waits for the rebalance, as in Kafka. Fields a
//! version lacks keep their defaults both ways: what an old request cannot carry reaches the
//! core as the default (no instance id, no reason), and what an old response cannot carry is
//! left out. Any reply that is not the request's own kind is UNKNOWN_SERVER_ERROR.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use railyard_core::groups::{
    GroupError, GroupRequest, GroupResponse, JoinMember, JoinResult, LeaveResult, SyncResult,
};

use super::common::{ask_group, unknown_server_error};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct JoinGroup;

impl Handler for JoinGroup {
    type Request = JoinGroupRequest;

    /// v0..=9: rebalance timeout from v1, instance id from v5, reason from v8.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        r.skip(4)?; // session_timeout_ms
        if v >= 1 {
            r.skip(4)?; // rebalance_timeout_ms
        }
        r.string()?; // member_id
        if v >= 5 {
            r.string()?; // group_instance_id (nullable)
        }
        r.string()?; // protocol_type
        r.array(|r| {
            r.string()?; // name
            r.bytes()?; // metadata
            r.tags()
        })?;
        if v >= 8 {
            r.string()?; // reason (nullable)
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: JoinGroupRequest,
    ) -> Answer<JoinGroupResponse> {
        let client = (ctx.client_id, ctx.client_host);
        Answer::Reply(join_group(ctx.broker, client, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(v: i16) -> JoinGroupRequest {
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        let protocol = |name| {
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(name))
                .with_metadata(bytes::Bytes::from_static(b"meta"))
        };
        let r = JoinGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_session_timeout_ms(10_000)
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![protocol("range"), protocol("roundrobin")]);
        let r = if v >= 1 {
            r.with_rebalance_timeout_ms(30_000)
        } else {
            r
        };
        let r = if v >= 5 {
            r.with_group_instance_id(Some(StrBytes::from_static_str("i-1")))
        } else {
            r
        };
        if v >= 8 {
            r.with_reason(Some(StrBytes::from_static_str("why")))
        } else {
            r
        }
    }
}

pub struct SyncGroup;

impl Handler for SyncGroup {
    type Request = SyncGroupRequest;

    /// v0..=5: instance id from v3, protocol type and name in v5.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        r.skip(4)?; // generation_id
        r.string()?; // member_id
        if v >= 3 {
            r.string()?; // group_instance_id (nullable)
        }
        if v >= 5 {
            r.string()?; // protocol_type (nullable)
            r.string()?; // protocol_name (nullable)
        }
        r.array(|r| {
            r.string()?; // member_id
            r.bytes()?; // assignment
            r.tags()
        })
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: SyncGroupRequest,
    ) -> Answer<SyncGroupResponse> {
        Answer::Reply(sync_group(ctx.broker, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(v: i16) -> SyncGroupRequest {
        use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
        let assignment = |m| {
            SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_static_str(m))
                .with_assignment(bytes::Bytes::from_static(b"assigned"))
        };
        let r = SyncGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id(3)
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_assignments(vec![assignment("m-1"), assignment("m-2")]);
        let r = if v >= 3 {
            r.with_group_instance_id(Some(StrBytes::from_static_str("i-1")))
        } else {
            r
        };
        if v >= 5 {
            r.with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("range")))
        } else {
            r
        }
    }
}

pub struct Heartbeat;

impl Handler for Heartbeat {
    type Request = HeartbeatRequest;

    /// v0..=4: instance id from v3.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        r.skip(4)?; // generation_id
        r.string()?; // member_id
        if v >= 3 {
            r.string()?; // group_instance_id (nullable)
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: HeartbeatRequest,
    ) -> Answer<HeartbeatResponse> {
        Answer::Reply(heartbeat(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(v: i16) -> HeartbeatRequest {
        let r = HeartbeatRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id(3)
            .with_member_id(StrBytes::from_static_str("m-1"));
        if v >= 3 {
            r.with_group_instance_id(Some(StrBytes::from_static_str("i-1")))
        } else {
            r
        }
    }
}

pub struct LeaveGroup;

impl Handler for LeaveGroup {
    type Request = LeaveGroupRequest;

    /// v0..=5: one member id up to v2, a batch of members from v3 (with a reason in v5).
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        if v <= 2 {
            return r.string(); // member_id
        }
        r.array(|r| {
            r.string()?; // member_id
            r.string()?; // group_instance_id (nullable)
            if v >= 5 {
                r.string()?; // reason (nullable)
            }
            r.tags()
        })
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: LeaveGroupRequest,
    ) -> Answer<LeaveGroupResponse> {
        Answer::Reply(leave_group(ctx.broker, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        out.extend(response.members.iter().map(|m| m.error_code));
    }

    #[cfg(test)]
    fn sample(v: i16) -> LeaveGroupRequest {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        let r = LeaveGroupRequest::default().with_group_id(group_id("g"));
        if v <= 2 {
            return r.with_member_id(StrBytes::from_static_str("m-1"));
        }
        let member = |m, i: Option<&'static str>| {
            let out = MemberIdentity::default()
                .with_member_id(StrBytes::from_static_str(m))
                .with_group_instance_id(i.map(StrBytes::from_static_str));
            if v >= 5 {
                out.with_reason(Some(StrBytes::from_static_str("bye")))
            } else {
                out
            }
        };
        r.with_members(vec![member("m-1", None), member("", Some("i-2"))])
    }
}

/// JoinGroup: v4+ members join in two steps (MEMBER_ID_REQUIRED first, KIP-394).
pub async fn join_group<B: Broker>(
    broker: &B,
    (client_id, client_host): (&str, &str),
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let member_id = req.member_id.to_string();
    let request = GroupRequest::Join {
        group: req.group_id.to_string(),
        member_id: member_id.clone(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        require_known_member_id: version >= 4,
        reason: req.reason.map(|s| s.to_string()),
    };
    match ask_group(broker, request).await {
        Some(GroupResponse::Join(r)) => join_response(r, version),
        // The default protocol name, "", is valid in every version.
        _ => JoinGroupResponse::default()
            .with_error_code(unknown_server_error())
            .with_member_id(StrBytes::from_string(member_id)),
    }
}

/// SyncGroup: the leader hands out the assignments, every member gets its own.
pub async fn sync_group<B: Broker>(
    broker: &B,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let request = GroupRequest::Sync {
        group: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    match ask_group(broker, request).await {
        Some(GroupResponse::Sync(r)) => sync_response(r, version),
        _ => SyncGroupResponse::default().with_error_code(unknown_server_error()),
    }
}

pub async fn heartbeat<B: Broker>(broker: &B, req: HeartbeatRequest) -> HeartbeatResponse {
    let request = GroupRequest::Heartbeat {
        group: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
    };
    let code = match ask_group(broker, request).await {
        Some(GroupResponse::Heartbeat(r)) => GroupError::code_of(r.err()),
        _ => unknown_server_error(),
    };
    HeartbeatResponse::default().with_error_code(code)
}

/// LeaveGroup: v0-2 name one member and get one error code, v3+ a batch with one error each.
pub async fn leave_group<B: Broker>(
    broker: &B,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members = if version <= 2 {
        vec![(req.member_id.to_string(), None)]
    } else {
        req.members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map(|s| s.to_string());
                (m.member_id.to_string(), instance)
            })
            .collect()
    };
    let request = GroupRequest::Leave {
        group: req.group_id.to_string(),
        members,
    };
    match ask_group(broker, request).await {
        Some(GroupResponse::Leave(r)) => leave_response(r, version),
        _ => LeaveGroupResponse::default().with_error_code(unknown_server_error()),
    }
}

fn join_response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let mut out = JoinGroupResponse::default()
        .with_error_code(GroupError::code_of(r.error))
        .with_generation_id(r.generation)
        .with_leader(StrBytes::from_string(r.leader))
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| join_member(m, version))
                .collect(),
        );
    // The protocol name is nullable (and the type present) only from v7.
    if version >= 7 {
        out.protocol_type = r.protocol_type.map(StrBytes::from_string);
        out.protocol_name = r.protocol_name.map(StrBytes::from_string);
    } else {
        out.protocol_name = Some(StrBytes::from_string(r.protocol_name.unwrap_or_default()));
    }
    if version >= 9 {
        out.skip_assignment = r.skip_assignment;
    }
    out
}

fn join_member(m: JoinMember, version: i16) -> JoinGroupResponseMember {
    let out = JoinGroupResponseMember::default()
        .with_member_id(StrBytes::from_string(m.member_id))
        .with_metadata(m.metadata);
    if version >= 5 {
        out.with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
    } else {
        out
    }
}

fn sync_response(r: SyncResult, version: i16) -> SyncGroupResponse {
    let out = SyncGroupResponse::default()
        .with_error_code(GroupError::code_of(r.error))
        .with_assignment(r.assignment);
    if version >= 5 {
        out.with_protocol_type(r.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
    } else {
        out
    }
}

fn leave_response(r: LeaveResult, version: i16) -> LeaveGroupResponse {
    if version <= 2 {
        // One member asked: its error is the request's.
        let member = r.members.first().and_then(|m| m.2);
        let code = GroupError::code_of(r.error.or(member));
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = r
        .members
        .into_iter()
        .map(|(member_id, instance, error)| {
            MemberResponse::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(instance.map(StrBytes::from_string))
                .with_error_code(GroupError::code_of(error))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(GroupError::code_of(r.error))
        .with_members(members)
}

/// A group id for requests, from a static name.
#[cfg(test)]
fn group_id(name: &'static str) -> kafka_protocol::messages::GroupId {
    kafka_protocol::messages::GroupId(StrBytes::from_static_str(name))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use railyard_core::api::{ClientError, Request, Response};

    use super::*;
    use crate::kafka::handlers::common::{assert_encodes, GroupFake};

    const CLIENT: (&str, &str) = ("client-1", "/10.0.0.1");

    fn leader_reply() -> JoinResult {
        JoinResult {
            error: None,
            generation: 4,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: "m-1".into(),
            skip_assignment: true,
            member_id: "m-1".into(),
            members: vec![JoinMember {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                metadata: Bytes::from_static(b"meta"),
            }],
        }
    }

    #[tokio::test]
    async fn test_join_maps_the_request_and_the_reply_of_every_version() {
        // Fields enter and leave only in the versions that carry them.
        for v in 0..=9 {
            let broker = GroupFake::replying(GroupResponse::Join(leader_reply()));
            let r = join_group(&broker, CLIENT, JoinGroup::sample(v), v).await;
            assert_encodes(&r, v);
            let [GroupRequest::Join {
                group,
                client_id,
                client_host,
                group_instance_id,
                rebalance_timeout_ms,
                require_known_member_id,
                reason,
                protocols,
                ..
            }] = &broker.seen()[..]
            else {
                panic!("one join expected")
            };
            assert_eq!((group.as_str(), client_id.as_str()), ("g", "client-1"));
            assert_eq!(client_host, "/10.0.0.1");
            assert_eq!(*rebalance_timeout_ms, if v >= 1 { 30_000 } else { 10_000 });
            assert_eq!(*require_known_member_id, v >= 4, "v{v}");
            assert_eq!(group_instance_id.is_some(), v >= 5, "v{v}");
            assert_eq!(reason.is_some(), v >= 8, "v{v}");
            assert_eq!(protocols[1].0, "roundrobin");
            assert_eq!((r.error_code, r.generation_id), (0, 4));
            assert_eq!(r.protocol_name.as_deref(), Some("range"));
            assert_eq!(r.protocol_type.is_some(), v >= 7, "v{v}");
            assert_eq!(r.skip_assignment, v >= 9, "v{v}");
            assert_eq!(r.members[0].group_instance_id.is_some(), v >= 5, "v{v}");
            assert_eq!((r.leader.as_str(), r.member_id.as_str()), ("m-1", "m-1"));
        }
    }

    #[tokio::test]
    async fn test_join_errors_keep_the_member_id_and_encode_in_old_versions() {
        // MEMBER_ID_REQUIRED hands out the id; a null protocol name is "" before v7.
        let reply = JoinResult::error(GroupError::MemberIdRequired, "m-new");
        for v in [4, 6, 7, 9] {
            let broker = GroupFake::replying(GroupResponse::Join(reply.clone()));
            let r = join_group(&broker, CLIENT, JoinGroup::sample(v), v).await;
            assert_encodes(&r, v);
            assert_eq!((r.error_code, r.member_id.as_str()), (79, "m-new"));
            let want = if v >= 7 { None } else { Some("") };
            assert_eq!(r.protocol_name.as_deref(), want, "v{v}");
        }
    }

    #[tokio::test]
    async fn test_sync_maps_every_version() {
        // The protocol type and name travel both ways only in v5.
        let reply = SyncResult {
            error: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignment: Bytes::from_static(b"mine"),
        };
        for v in 0..=5 {
            let broker = GroupFake::replying(GroupResponse::Sync(reply.clone()));
            let r = sync_group(&broker, SyncGroup::sample(v), v).await;
            assert_encodes(&r, v);
            assert_eq!((r.error_code, &r.assignment[..]), (0, &b"mine"[..]));
            assert_eq!(r.protocol_name.is_some(), v >= 5, "v{v}");
            let [GroupRequest::Sync {
                generation,
                assignments,
                protocol_name,
                group_instance_id,
                ..
            }] = &broker.seen()[..]
            else {
                panic!("one sync expected")
            };
            assert_eq!((*generation, assignments.len()), (3, 2));
            assert_eq!(protocol_name.is_some(), v >= 5);
            assert_eq!(group_instance_id.is_some(), v >= 3);
        }
    }

    #[tokio::test]
    async fn test_heartbeat_codes() {
        // Success, a group error, and a reply of another kind.
        let cases = [
            (GroupResponse::Heartbeat(Ok(())), 0),
            (
                GroupResponse::Heartbeat(Err(GroupError::RebalanceInProgress)),
                27,
            ),
            (
                GroupResponse::Sync(SyncResult::error(GroupError::NotCoordinator)),
                -1,
            ),
        ];
        for (reply, code) in cases {
            for v in 0..=4 {
                let broker = GroupFake::replying(reply.clone());
                let r = heartbeat(&broker, Heartbeat::sample(v)).await;
                assert_encodes(&r, v);
                assert_eq!(r.error_code, code);
            }
        }
    }

    #[tokio::test]
    async fn test_leave_single_member_and_batches() {
        // v0-2 answer the one member's error at the top; v3+ one entry per member.
        let reply = LeaveResult {
            error: None,
            members: vec![
                ("m-1".into(), None, Some(GroupError::UnknownMemberId)),
                ("".into(), Some("i-2".into()), None),
            ],
        };
        for v in 0..=5 {
            let broker = GroupFake::replying(GroupResponse::Leave(reply.clone()));
            let r = leave_group(&broker, LeaveGroup::sample(v), v).await;
            assert_encodes(&r, v);
            let [GroupRequest::Leave { members, .. }] = &broker.seen()[..] else {
                panic!("one leave expected")
            };
            if v <= 2 {
                assert_eq!(members, &vec![("m-1".to_string(), None)]);
                assert_eq!((r.error_code, r.members.len()), (25, 0));
            } else {
                assert_eq!(members.len(), 2);
                assert_eq!(members[1], ("".to_string(), Some("i-2".to_string())));
                let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
                assert_eq!((r.error_code, codes), (0, vec![25, 0]));
                assert_eq!(r.members[1].group_instance_id.as_deref(), Some("i-2"));
            }
        }
    }

    #[tokio::test]
    async fn test_a_node_that_does_not_lead_the_partition_is_not_coordinator() {
        // The node answers a group request it cannot route with the request's own error reply.
        let broker = GroupFake::new(|g| {
            let request = Request::Group(g.clone());
            Response::error_for(&request, ClientError::NotLeader { leader: Some(2) })
        });
        let r = join_group(&broker, CLIENT, JoinGroup::sample(5), 5).await;
        assert_eq!(r.error_code, 16);
        let r = sync_group(&broker, SyncGroup::sample(5), 5).await;
        assert_eq!(r.error_code, 16);
        let r = heartbeat(&broker, Heartbeat::sample(4)).await;
        assert_eq!(r.error_code, 16);
        let r = leave_group(&broker, LeaveGroup::sample(5), 5).await;
        assert_eq!(r.error_code, 16);
    }

    #[tokio::test]
    async fn test_an_empty_group_id_gets_the_cores_invalid_group_id() {
        // The listener passes empty ids through: the coordinator refuses them.
        let broker = GroupFake::new(|g| {
            let e = GroupError::InvalidGroupId;
            assert_eq!(g.group(), Some(""));
            Response::Group(GroupResponse::error_for(g, e))
        });
        let join = JoinGroup::sample(9).with_group_id(group_id(""));
        assert_eq!(join_group(&broker, CLIENT, join, 9).await.error_code, 24);
        let sync = SyncGroup::sample(5).with_group_id(group_id(""));
        assert_eq!(sync_group(&broker, sync, 5).await.error_code, 24);
        let beat = Heartbeat::sample(4).with_group_id(group_id(""));
        assert_eq!(heartbeat(&broker, beat).await.error_code, 24);
        let leave = LeaveGroup::sample(1).with_group_id(group_id(""));
        assert_eq!(leave_group(&broker, leave, 1).await.error_code, 24);
    }

    #[tokio::test]
    async fn test_replies_of_another_kind_are_unknown_server_error() {
        // A runtime bug reaches the client as a generic error, not a panic or a dead link.
        let broker = GroupFake::new(|_| Response::CreateTopic(Ok(())));
        for v in [0, 9] {
            let r = join_group(&broker, CLIENT, JoinGroup::sample(v), v).await;
            assert_encodes(&r, v);
            assert_eq!((r.error_code, r.member_id.as_str()), (-1, "m-1"));
        }
        let broker = GroupFake::replying(GroupResponse::Heartbeat(Ok(())));
        assert_eq!(
            sync_group(&broker, SyncGroup::sample(0), 0)
                .await
                .error_code,
            -1
        );
        let r = leave_group(&broker, LeaveGroup::sample(3), 3).await;
        assert_eq!(r.error_code, -1);
    }
}
