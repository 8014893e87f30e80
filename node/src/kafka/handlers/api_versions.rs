//! ApiVersions: the versions of every API in [`Api::ALL`].
//!
//! The answer fits every version, including the v0 layout in which the dispatcher answers a
//! too-new ApiVersions with UNSUPPORTED_VERSION (KIP-511), so that the client can retry with a
//! version we list.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{Answer, Api, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct ApiVersions;

impl Handler for ApiVersions {
    type Request = ApiVersionsRequest;

    fn layout(r: &mut Reader<'_>, version: i16) -> Result<(), GuardError> {
        if version >= 3 {
            r.string()?; // client_software_name
            r.string()?; // client_software_version
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        _ctx: Ctx<'_, B>,
        _request: ApiVersionsRequest,
    ) -> Answer<ApiVersionsResponse> {
        Answer::Reply(response::<B>(None))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> ApiVersionsRequest {
        use kafka_protocol::protocol::StrBytes;
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("client"))
            .with_client_software_version(StrBytes::from_static_str("1.2"))
    }
}

/// The response listing [`Api::ALL`], with `error` as its error code.
pub fn response<B: Broker>(error: Option<ResponseError>) -> ApiVersionsResponse {
    let keys = Api::<B>::ALL
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min)
                .with_max_version(api.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(keys)
}
