//! Text-to-speech streamed to the client as it arrives, kept as media as it goes, settled when the last byte is in.

use super::Speaking;
use crate::api::call::{Billed, Measured};
use crate::state::AppState;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures::StreamExt;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::speech::{format_content_type, format_extension};
use switchyard_actors::Credits;

/// Streams a started text-to-speech call to the client as raw audio bytes, storing it as it goes. The bill is
/// settled when the last byte is in; a stream that breaks off aborts the response (the client sees an incomplete
/// body, never a short file passed off as whole) and is not charged; a client that leaves is charged in full
/// (the provider spoke the whole text). Warnings (a fallback's voice or format) go in `x-switchyard-warnings`.
pub fn stream_audio(state: actix_web::web::Data<AppState>, workspace_id: String, speaking: Speaking) -> HttpResponse {
    let Speaking { billed, answered, stream, format, cost, units, usage: _, warnings } = speaking;
    let content_type = format_content_type(&format).unwrap_or("application/octet-stream");
    let model_name = answered.model.name.clone();
    let body = async_stream::stream! {
        let mut bill = LeftBill { billed: Some(billed), cost, units, bytes: 0 };
        // The copy kept as media is best effort here: the client has the audio either way. A copy that cannot be
        // written whole is dropped, never published part way.
        let mut writer = match crate::media::MediaWriter::create(&state.media, &workspace_id).await {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::warn!(error = %e, "could not store streamed audio");
                None
            }
        };
        let mut chunks = futures::stream::iter([Ok(stream.first)]).chain(stream.rest);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.write(&chunk).await {
                            tracing::warn!(error = %e, "could not store streamed audio");
                            if let Some(w) = writer.take() {
                                w.abort().await;
                            }
                        }
                    }
                    bill.bytes += chunk.len() as u64;
                    yield Ok::<Bytes, std::io::Error>(chunk);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the audio stream broke off");
                    if let Some(w) = writer.take() {
                        w.abort().await;
                    }
                    if let Some(mut billed) = bill.billed.take() {
                        billed.fail("cut");
                    }
                    yield Err(std::io::Error::other(format!("the provider's audio stream broke off: {e}")));
                    return;
                }
            }
        }
        if let Some(w) = writer {
            let filename = format!("speech.{}", format_extension(&format));
            if let Err(e) = w.finish(&state.store, &filename, content_type).await {
                tracing::warn!(error = %e, "could not store streamed audio");
            }
        }
        if let Some(billed) = bill.billed.take() {
            if let Err(e) = billed.settle(&answered, cost, Measured { units, output_bytes: bill.bytes, ..Default::default() }).await {
                tracing::error!(error = %e.body().error.message, "could not settle a speech stream");
            }
        }
    };
    let mut response = HttpResponse::Ok();
    response.content_type(content_type).insert_header(("x-switchyard-model", model_name.as_str()));
    // A raw audio body has no room for them: what was not used as asked goes in a header, as JSON.
    if !warnings.is_empty() {
        response.insert_header(("x-switchyard-warnings", ascii_json(&warnings)));
    }
    response.streaming(body)
}

/// The bill of a streamed answer the client may leave part way: charged in full when dropped unsettled.
struct LeftBill {
    billed: Option<Billed>,
    cost: Credits,
    units: u64,
    bytes: u64,
}

impl Drop for LeftBill {
    fn drop(&mut self) {
        if let Some(mut billed) = self.billed.take() {
            let measured = Measured { units: self.units, output_bytes: self.bytes, ..Default::default() };
            billed.settle_detached(self.cost, measured, "abandoned", Outcome::Neutral);
        }
    }
}

/// JSON with every character outside printable ASCII written as `\uXXXX`, so it is a valid header value.
fn ascii_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
