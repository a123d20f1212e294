//! The gRPC side of the harness: the client generated from the api's own `.proto` files, a
//! channel to a [`TestEnv`]'s API port, requests carrying the bearer token, and the decoding
//! of the error details every failed call carries. The tests talk to the server as a client
//! generated from those files would; [`web`] does the same for gRPC-Web, by hand, as a
//! browser's client would.

pub mod web;

use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::env::TestEnv;
// `google.rpc.Status`, the payload of `grpc-status-details-bin`.
use proto::zitadel::resources::user::v3alpha::zitadel_users_client::ZitadelUsersClient;
use proto::zitadel::v1::ErrorDetail;
pub use tonic_types::pb::Status as RpcStatus;

/// The messages and the `ZITADELUsers` client generated from `api/proto` by `build.rs`.
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/contact_email_proto.rs"));
}

/// The users service's full name, as it stands in the path of every call.
pub const SERVICE: &str = "zitadel.resources.user.v3alpha.ZITADELUsers";
/// The type URL of the one detail of every error status, as ZITADEL sends it.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// An HTTP/2 connection without TLS (as gRPC clients connect) to the API port.
pub async fn channel(env: &TestEnv) -> Channel {
    Endpoint::from_shared(env.api_url())
        .expect("the API URL")
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect over HTTP/2 to API_ADDR")
}

/// The generated `ZITADELUsers` client on a new [`channel`].
pub async fn users_client(env: &TestEnv) -> ZitadelUsersClient<Channel> {
    ZitadelUsersClient::new(channel(env).await)
}

/// `message` as a request, with `authorization: Bearer <token>` when a token is given.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .expect("a token is valid metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The `google.rpc.Status` of a failed call's details (`tonic::Status::details`, or the
/// decoded `grpc-status-details-bin` of a gRPC-Web answer).
pub fn rpc_status(details: &[u8]) -> Result<RpcStatus, prost::DecodeError> {
    RpcStatus::decode(details)
}

/// The `zitadel.v1.ErrorDetail` of a failed call's details: the first detail of its
/// `google.rpc.Status`, if both decode.
pub fn error_detail(details: &[u8]) -> Option<ErrorDetail> {
    let status = rpc_status(details).ok()?;
    let any = status.details.first()?;
    ErrorDetail::decode(any.value.as_slice()).ok()
}
