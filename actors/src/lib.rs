//! Switchyard's engine: the model catalogue, the provider clients behind one contract, and (as they land) the
//! actors that own sessions, the provider pool and the billing ledger. Nothing here knows about actix-web.

pub mod background;
pub mod catalogue;
pub mod chat;
pub mod chunk;
pub mod credits;
pub mod embed;
pub mod engine;
pub mod error;
pub mod image;
pub mod providers;
pub mod realtime;
pub mod speech;
pub mod tasks;
pub mod vectors;
pub mod warning;

pub use catalogue::{Catalogue, ModelSpec, ProviderKind, ProviderSpec};
pub use chat::{ChatEvent, ChatRequest, ChatResponse, ChatStream, FinishReason, Message, Role, Usage};
pub use credits::Credits;
pub use error::ProviderError;
pub use providers::{ProviderSet, Timeouts};
pub use warning::Warning;
