//! The remote store's error handling: telling a missing collection apart, describing client errors, and checking
//! that a write was applied.

use crate::vectors::StoreResult;
use qdrant_client::qdrant::{PointsOperationResponse, UpdateStatus};
use qdrant_client::QdrantError;

/// gRPC's NOT_FOUND status code (a fixed number of the gRPC protocol); Qdrant answers it for a missing collection.
const GRPC_NOT_FOUND: i32 = 5;
pub(super) fn is_not_found(error: &QdrantError) -> bool {
    matches!(error, QdrantError::ResponseError { status } if i32::from(status.code()) == GRPC_NOT_FOUND)
}

/// An error's message without the response metadata the client's `Display` appends.
pub(super) fn describe(error: &QdrantError) -> String {
    match error {
        QdrantError::ResponseError { status } | QdrantError::ResourceExhaustedError { status, .. } => {
            format!("{} ({})", status.message(), status.code())
        }
        other => other.to_string(),
    }
}

pub(super) fn failure(action: &str, name: &str, error: &QdrantError) -> String {
    format!("Qdrant: cannot {action} the collection `{name}`: {}", describe(error))
}

/// Why a write was not applied, when it was not (with `wait=true` the server answers once it is).
fn not_applied(response: &PointsOperationResponse) -> Option<String> {
    let status = response.result.map(|r| r.status)?;
    match UpdateStatus::try_from(status) {
        Ok(UpdateStatus::Completed | UpdateStatus::Acknowledged) => None,
        Ok(other) => Some(format!("the update was not applied: {}", other.as_str_name())),
        Err(_) => Some(format!("the update was not applied: status {status}")),
    }
}

pub(super) fn applied(response: &PointsOperationResponse, action: &str, name: &str) -> StoreResult<()> {
    match not_applied(response) {
        None => Ok(()),
        Some(message) => Err(format!("Qdrant: cannot {action} the collection `{name}`: {message}")),
    }
}
