//! A request parameter the gateway sent upstream with another value than asked, or not at all: said in the
//! response's `warnings` list, never changed silently.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Warning {
    /// The request field, or `upstream_model` when the request went to another upstream model.
    pub param: String,
    pub asked: Value,
    /// `null` when the parameter was not sent.
    pub used: Value,
    pub message: String,
}

impl Warning {
    pub fn new(param: &str, asked: Value, used: Value, message: impl Into<String>) -> Self {
        Warning { param: param.to_owned(), asked, used, message: message.into() }
    }
}
