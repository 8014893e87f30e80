//! ListGroups, DescribeGroups and DeleteGroups: the admin view of consumer groups.
//!
//! ListGroups is one [`GroupRequest::List`], which names no partition: the node answers it
//! for every `__consumer_offsets` partition it coordinates and merges the lists, as a Kafka
//! broker lists the groups it coordinates (admin clients ask every broker). DescribeGroups and
//! DeleteGroups name groups that may live on different coordinators, so each group is its own
//! core request, concurrently, answered in request order. Every group here is a classic group:
//! a ListGroups v5 types filter without "classic" matches nothing, and group_type is "classic".
//! Without ACLs a client may do everything to a group: DescribeGroups v3+ reports READ, DELETE
//! and DESCRIBE when asked for authorized operations, and Kafka's "not asked" value otherwise.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{
    DescribedGroup as KafkaDescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::list_groups_response::ListedGroup as KafkaListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use railyard_core::groups::{
    DescribedGroup, DescribedMember, GroupError, GroupRequest, GroupResponse,
};

use super::common::{ask_group, ask_groups, str_bytes, unknown_server_error};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

/// The only group type this broker has (KIP-848's name for the classic protocol).
pub const CLASSIC: &str = "classic";

pub use super::common::{GROUP_OPERATIONS, OPERATIONS_NOT_ASKED};

pub struct ListGroups;

impl Handler for ListGroups {
    type Request = ListGroupsRequest;

    /// v0..=5: a states filter from v4, a types filter in v5.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        if v >= 4 {
            r.array(|r| r.string())?; // states_filter
        }
        if v >= 5 {
            r.array(|r| r.string())?; // types_filter
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: ListGroupsRequest,
    ) -> Answer<ListGroupsResponse> {
        Answer::Reply(list_groups(ctx.broker, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(v: i16) -> ListGroupsRequest {
        let r = ListGroupsRequest::default();
        let r = if v >= 4 {
            r.with_states_filter(vec![str_bytes("Stable"), str_bytes("Empty")])
        } else {
            r
        };
        if v >= 5 {
            r.with_types_filter(vec![str_bytes("classic"), str_bytes("consumer")])
        } else {
            r
        }
    }
}

pub struct DescribeGroups;

impl Handler for DescribeGroups {
    type Request = DescribeGroupsRequest;

    /// v0..=5: include_authorized_operations from v3.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.array(|r| r.string())?; // groups
        if v >= 3 {
            r.skip(1)?; // include_authorized_operations
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DescribeGroupsRequest,
    ) -> Answer<DescribeGroupsResponse> {
        Answer::Reply(describe_groups(ctx.broker, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.groups.iter().map(|g| g.error_code));
    }

    #[cfg(test)]
    fn sample(v: i16) -> DescribeGroupsRequest {
        let r = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(str_bytes("g")), GroupId(str_bytes("h"))]);
        if v >= 3 {
            r.with_include_authorized_operations(true)
        } else {
            r
        }
    }
}

pub struct DeleteGroups;

impl Handler for DeleteGroups {
    type Request = DeleteGroupsRequest;

    /// v0..=2 (v2 is the flexible encoding).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| r.string()) // groups_names
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DeleteGroupsRequest,
    ) -> Answer<DeleteGroupsResponse> {
        Answer::Reply(delete_groups(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.results.iter().map(|g| g.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> DeleteGroupsRequest {
        DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(str_bytes("g")), GroupId(str_bytes("h"))])
    }
}

/// ListGroups: the groups of the coordinators on this broker (the node merges them).
pub async fn list_groups<B: Broker>(
    broker: &B,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let classic = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(CLASSIC));
    if !classic {
        return ListGroupsResponse::default();
    }
    let request = GroupRequest::List {
        states_filter: req.states_filter.iter().map(|s| s.to_string()).collect(),
    };
    let groups = match ask_group(broker, request).await {
        Some(GroupResponse::List(Ok(groups))) => groups,
        Some(GroupResponse::List(Err(e))) => {
            return ListGroupsResponse::default().with_error_code(e.code())
        }
        _ => return ListGroupsResponse::default().with_error_code(unknown_server_error()),
    };
    let groups = groups
        .into_iter()
        .map(|g| {
            let mut out = KafkaListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if version >= 4 {
                out.group_state = str_bytes(g.state.name());
            }
            if version >= 5 {
                out.group_type = str_bytes(CLASSIC);
            }
            out
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups: one core request per group, answered in request order.
pub async fn describe_groups<B: Broker>(
    broker: &B,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let requests = req
        .groups
        .iter()
        .map(|g| GroupRequest::Describe {
            groups: vec![g.to_string()],
        })
        .collect();
    let replies = ask_groups(broker, requests).await;
    let operations = if req.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        OPERATIONS_NOT_ASKED
    };
    let groups = req
        .groups
        .iter()
        .zip(replies)
        .map(|(id, reply)| {
            let out = match reply {
                Some(GroupResponse::Describe(mut groups)) if groups.len() == 1 => {
                    described(groups.remove(0), version)
                }
                _ => KafkaDescribedGroup::default().with_error_code(unknown_server_error()),
            };
            let out = out.with_group_id(id.clone());
            if version >= 3 {
                out.with_authorized_operations(operations)
            } else {
                out
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: one core request per group, answered in request order.
pub async fn delete_groups<B: Broker>(
    broker: &B,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let requests = req
        .groups_names
        .iter()
        .map(|g| GroupRequest::Delete {
            groups: vec![g.to_string()],
        })
        .collect();
    let replies = ask_groups(broker, requests).await;
    let results = req
        .groups_names
        .iter()
        .zip(replies)
        .map(|(id, reply)| {
            let code = match reply {
                Some(GroupResponse::Delete(r)) if r.len() == 1 => GroupError::code_of(r[0].1),
                _ => unknown_server_error(),
            };
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

/// One described group, but its id and authorized operations.
fn described(g: DescribedGroup, version: i16) -> KafkaDescribedGroup {
    KafkaDescribedGroup::default()
        .with_error_code(GroupError::code_of(g.error))
        .with_group_state(str_bytes(g.state.name()))
        .with_protocol_type(StrBytes::from_string(g.protocol_type))
        .with_protocol_data(StrBytes::from_string(g.protocol))
        .with_members(g.members.into_iter().map(|m| member(m, version)).collect())
}

/// One member; the instance id from v4.
fn member(m: DescribedMember, version: i16) -> DescribedGroupMember {
    let out = DescribedGroupMember::default()
        .with_member_id(StrBytes::from_string(m.member_id))
        .with_client_id(StrBytes::from_string(m.client_id))
        .with_client_host(StrBytes::from_string(m.client_host))
        .with_member_metadata(m.metadata)
        .with_member_assignment(m.assignment);
    if version >= 4 {
        out.with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use railyard_core::api::Response;
    use railyard_core::groups::{GroupState, ListedGroup};

    use super::*;
    use crate::kafka::handlers::common::{assert_encodes, GroupFake};

    fn listed() -> GroupResponse {
        GroupResponse::List(Ok(vec![ListedGroup {
            group: "g".into(),
            protocol_type: "consumer".into(),
            state: GroupState::Stable,
        }]))
    }

    /// A coordinator that knows group "g" (Stable, one static member) and no other.
    fn coordinator() -> GroupFake {
        GroupFake::new(|r| {
            let reply = match r {
                GroupRequest::Describe { groups } => {
                    GroupResponse::Describe(groups.iter().map(|g| describe_one(g)).collect())
                }
                GroupRequest::Delete { groups } => GroupResponse::Delete(
                    groups
                        .iter()
                        .map(|g| {
                            let e = (g != "g").then_some(GroupError::GroupIdNotFound);
                            (g.clone(), e)
                        })
                        .collect(),
                ),
                other => panic!("unexpected {other:?}"),
            };
            Response::Group(reply)
        })
    }

    fn describe_one(g: &str) -> DescribedGroup {
        let known = g == "g";
        DescribedGroup {
            group: g.into(),
            error: (g == "loading").then_some(GroupError::CoordinatorLoadInProgress),
            state: if known {
                GroupState::Stable
            } else {
                GroupState::Dead
            },
            protocol_type: if known {
                "consumer".into()
            } else {
                String::new()
            },
            protocol: if known { "range".into() } else { String::new() },
            members: if known {
                vec![DescribedMember {
                    member_id: "m-1".into(),
                    group_instance_id: Some("i-1".into()),
                    client_id: "client-1".into(),
                    client_host: "/10.0.0.1".into(),
                    metadata: Bytes::from_static(b"meta"),
                    assignment: Bytes::from_static(b"assigned"),
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[tokio::test]
    async fn test_list_maps_every_version_and_passes_the_states_filter() {
        // States from v4, the classic type in v5; the filter reaches the core as given.
        for v in 0..=5 {
            let broker = GroupFake::replying(listed());
            let r = list_groups(&broker, ListGroups::sample(v), v).await;
            assert_encodes(&r, v);
            assert_eq!((r.error_code, r.groups.len()), (0, 1));
            let g = &r.groups[0];
            assert_eq!(
                (g.group_id.as_str(), g.protocol_type.as_str()),
                ("g", "consumer")
            );
            assert_eq!(g.group_state.as_str(), if v >= 4 { "Stable" } else { "" });
            assert_eq!(g.group_type.as_str(), if v >= 5 { "classic" } else { "" });
            let [GroupRequest::List { states_filter }] = &broker.seen()[..] else {
                panic!("one list expected")
            };
            assert_eq!(states_filter.len(), if v >= 4 { 2 } else { 0 });
        }
    }

    #[tokio::test]
    async fn test_list_types_filter_and_errors() {
        // A filter without "classic" matches nothing; "" filters nothing; errors pass through.
        let broker = GroupFake::replying(listed());
        let consumer = ListGroupsRequest::default().with_types_filter(vec![str_bytes("consumer")]);
        let r = list_groups(&broker, consumer, 5).await;
        assert_eq!((r.error_code, r.groups.len()), (0, 0));
        assert!(broker.seen().is_empty());
        let classic = ListGroupsRequest::default().with_types_filter(vec![str_bytes("Classic")]);
        assert_eq!(list_groups(&broker, classic, 5).await.groups.len(), 1);
        let loading = GroupFake::replying(GroupResponse::List(Err(
            GroupError::CoordinatorLoadInProgress,
        )));
        let r = list_groups(&loading, ListGroups::sample(5), 5).await;
        assert_eq!(r.error_code, 14);
        let foreign = GroupFake::replying(GroupResponse::Heartbeat(Ok(())));
        assert_eq!(
            list_groups(&foreign, ListGroups::sample(0), 0)
                .await
                .error_code,
            -1
        );
    }

    #[tokio::test]
    async fn test_describe_asks_per_group_and_maps_every_version() {
        // One core request per group; members' instance ids from v4; operations from v3.
        for v in 0..=5 {
            let broker = coordinator();
            let r = describe_groups(&broker, DescribeGroups::sample(v), v).await;
            assert_encodes(&r, v);
            assert_eq!(broker.seen().len(), 2);
            let ids: Vec<&str> = r.groups.iter().map(|g| g.group_id.as_str()).collect();
            assert_eq!(ids, vec!["g", "h"]);
            let (g, h) = (&r.groups[0], &r.groups[1]);
            assert_eq!(
                (g.group_state.as_str(), g.protocol_data.as_str()),
                ("Stable", "range")
            );
            assert_eq!((h.error_code, h.group_state.as_str()), (0, "Dead"));
            let m = &g.members[0];
            assert_eq!(
                (m.client_id.as_str(), m.client_host.as_str()),
                ("client-1", "/10.0.0.1")
            );
            assert_eq!(&m.member_assignment[..], b"assigned");
            assert_eq!(m.group_instance_id.is_some(), v >= 4, "v{v}");
            let operations = if v >= 3 {
                GROUP_OPERATIONS
            } else {
                OPERATIONS_NOT_ASKED
            };
            assert_eq!(g.authorized_operations, operations, "v{v}");
        }
        let broker = coordinator();
        let r = describe_groups(
            &broker,
            DescribeGroups::sample(5).with_include_authorized_operations(false),
            5,
        )
        .await;
        assert_eq!(r.groups[0].authorized_operations, OPERATIONS_NOT_ASKED);
    }

    #[tokio::test]
    async fn test_describe_and_delete_errors_per_group() {
        // A group's own error stays on that group (an empty id is a valid group here, as in
        // Kafka: the core describes it); a foreign reply is UNKNOWN_SERVER_ERROR.
        let broker = coordinator();
        let ids = ["", "loading", "g"].map(|g| GroupId(str_bytes(g)));
        let req = DescribeGroupsRequest::default().with_groups(ids.to_vec());
        let r = describe_groups(&broker, req, 5).await;
        let codes: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
        assert_eq!(codes, vec![0, 14, 0]);
        assert_eq!(r.groups[0].group_state.as_str(), "Dead");
        let foreign = GroupFake::replying(GroupResponse::Heartbeat(Ok(())));
        let r = describe_groups(&foreign, DescribeGroups::sample(1), 1).await;
        assert!(r.groups.iter().all(|g| g.error_code == -1));
        assert_encodes(&r, 1);
        let r = delete_groups(&foreign, DeleteGroups::sample(0)).await;
        assert!(r.results.iter().all(|g| g.error_code == -1));
    }

    #[tokio::test]
    async fn test_delete_asks_per_group_in_request_order() {
        // Every version, one result per group, in order.
        for v in 0..=2 {
            let broker = coordinator();
            let r = delete_groups(&broker, DeleteGroups::sample(v)).await;
            assert_encodes(&r, v);
            let results: Vec<(&str, i16)> = r
                .results
                .iter()
                .map(|g| (g.group_id.as_str(), g.error_code))
                .collect();
            assert_eq!(results, vec![("g", 0), ("h", 69)]);
            assert_eq!(broker.seen().len(), 2);
        }
    }
}
