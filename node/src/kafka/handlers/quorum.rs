//! AddRaftVoter and RemoveRaftVoter (KIP-853): controller quorum changes, through the metadata
//! leader ([`Request::AddControllerVoter`], [`Request::RemoveControllerVoter`]), forwarded to
//! it like the other controller APIs. Every broker is already a learner of the metadata group,
//! so adding promotes a learner and removing demotes a voter to learner (it stays a broker);
//! the voter directory id and listeners of AddRaftVoter are not needed and not checked. A
//! request naming another cluster is INCONSISTENT_CLUSTER_ID; the rest of the codes are in
//! `railyard_core::node::quorum`.

use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{Request, Response};
use railyard_core::types::NodeId;

use super::topics::AdminError;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};

pub struct AddRaftVoter;

impl Handler for AddRaftVoter {
    type Request = AddRaftVoterRequest;

    /// v0 (flexible).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.string()?; // cluster_id (nullable)
        r.skip(4 + 4 + 16)?; // timeout_ms, voter_id, voter_directory_id
        r.array(|r| {
            r.string()?; // name
            r.string()?; // host
            r.skip(2)?; // port
            r.tags()
        }) // listeners
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: AddRaftVoterRequest,
    ) -> Answer<AddRaftVoterResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        let e = change(&ctx, request.cluster_id.as_ref(), request.voter_id, true).await;
        let resp = AddRaftVoterResponse::default();
        Answer::Reply(match e {
            None => resp,
            Some(e) => resp
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message))),
        })
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> AddRaftVoterRequest {
        AddRaftVoterRequest::default().with_voter_id(4)
    }
}

pub struct RemoveRaftVoter;

impl Handler for RemoveRaftVoter {
    type Request = RemoveRaftVoterRequest;

    /// v0 (flexible).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.string()?; // cluster_id (nullable)
        r.skip(4 + 16) // voter_id, voter_directory_id
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: RemoveRaftVoterRequest,
    ) -> Answer<RemoveRaftVoterResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        let e = change(&ctx, request.cluster_id.as_ref(), request.voter_id, false).await;
        let resp = RemoveRaftVoterResponse::default();
        Answer::Reply(match e {
            None => resp,
            Some(e) => resp
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message))),
        })
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> RemoveRaftVoterRequest {
        RemoveRaftVoterRequest::default().with_voter_id(4)
    }
}

/// One quorum change through the core; `None` when it applied.
async fn change<B: Broker>(
    ctx: &Ctx<'_, B>,
    cluster_id: Option<&StrBytes>,
    voter: i32,
    promote: bool,
) -> Option<AdminError> {
    let view = ctx.broker.cluster();
    if let Some(id) = cluster_id.filter(|id| id.as_str() != view.cluster_id()) {
        return Some(AdminError::kafka(
            ResponseError::InconsistentClusterId,
            format!(
                "cluster {} is not this cluster ({})",
                id.as_str(),
                view.cluster_id()
            ),
        ));
    }
    let Ok(broker) = NodeId::try_from(voter) else {
        return Some(AdminError::kafka(
            ResponseError::VoterNotFound,
            format!("broker {voter} is not a controller voter"),
        ));
    };
    let request = if promote {
        Request::AddControllerVoter { broker }
    } else {
        Request::RemoveControllerVoter { broker }
    };
    match ctx.broker.request(request).await {
        Response::QuorumChange(Ok(())) => None,
        Response::QuorumChange(Err(e)) => Some(AdminError::core(&e)),
        _ => Some(AdminError::unexpected()),
    }
}
