//! Black Forest Labs (Flux): submit the job, poll its `polling_url` until it is ready (within the total bound),
//! then fetch the image from the signed `sample` URL.

use super::http::Upstream;
use crate::catalogue::ModelSpec;
use crate::error::{ProviderError, TimeoutPhase};
use crate::image::{ImageRequest, ImageResult};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub struct Bfl {
    upstream: Upstream,
}

impl Bfl {
    pub(crate) fn new(upstream: Upstream) -> Self {
        Bfl { upstream }
    }

    fn keyed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.upstream.key {
            Some(key) => builder.header("x-key", key),
            None => builder,
        }
    }

    pub async fn generate(&self, model: &ModelSpec, request: &ImageRequest) -> Result<ImageResult, ProviderError> {
        let deadline = self.upstream.deadline();
        let body = WireSubmit {
            prompt: &request.prompt,
            width: request.width,
            height: request.height,
            steps: request.steps,
            guidance: request.guidance,
            seed: request.seed,
            output_format: &request.output_format,
            image_prompt: request.image_prompt.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        };
        let upstream_model = request.upstream.as_deref().unwrap_or(&model.upstream);
        let url = format!("{}/v1/{upstream_model}", self.upstream.base_url);
        let submit = self.keyed(self.upstream.client.post(url).json(&body));
        let response = self.upstream.send(submit, deadline, error_message).await?;
        let submitted: WireSubmitted = serde_json::from_slice(&self.upstream.body(response, deadline).await?)
            .map_err(|e| self.upstream.protocol(format!("bad submit answer: {e}")))?;
        let polling_url = submitted
            .polling_url
            .unwrap_or_else(|| format!("{}/v1/get_result?id={}", self.upstream.base_url, submitted.id));
        let sample = loop {
            let wake = Instant::now() + self.upstream.timeouts.poll_interval;
            if wake >= deadline {
                return Err(self.upstream.timeout(TimeoutPhase::Total));
            }
            tokio::time::sleep_until(wake).await;
            let poll = self.keyed(self.upstream.client.get(&polling_url));
            let response = self.upstream.send(poll, deadline, error_message).await?;
            let result: WireResult = serde_json::from_slice(&self.upstream.body(response, deadline).await?)
                .map_err(|e| self.upstream.protocol(format!("bad poll answer: {e}")))?;
            match result.status.as_str() {
                "Ready" => match result.result.and_then(|r| r.sample) {
                    Some(sample) => break sample,
                    None => return Err(self.upstream.protocol("ready without a sample")),
                },
                "Pending" | "Queued" | "Processing" => continue,
                "Content Moderated" | "Request Moderated" => {
                    return Err(ProviderError::Rejected {
                        provider: self.upstream.name.clone(),
                        status: 400,
                        message: format!("the image provider refused the prompt ({})", result.status),
                    })
                }
                other => {
                    return Err(ProviderError::Upstream {
                        provider: self.upstream.name.clone(),
                        status: 500,
                        message: format!("the image task ended with status `{other}`"),
                    })
                }
            }
        };
        // The sample is a signed URL: no key goes with it.
        let response = self.upstream.send(self.upstream.client.get(&sample), deadline, error_message).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("image/png")
            .to_owned();
        let bytes = self.upstream.body(response, deadline).await?;
        Ok(ImageResult { bytes, content_type, seed: request.seed })
    }
}

/// BFL's errors: `{"detail": "..."}` or FastAPI's `{"detail": [{"loc": [...], "msg": "..."}]}`.
fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &value["detail"] {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .map(|i| format!("{}: {}", i["loc"], i["msg"].as_str().unwrap_or("invalid")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

#[derive(Serialize)]
struct WireSubmit<'a> {
    prompt: &'a str,
    width: u32,
    height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guidance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    output_format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_prompt: Option<String>,
}

#[derive(Deserialize)]
struct WireSubmitted {
    id: String,
    polling_url: Option<String>,
}

#[derive(Deserialize)]
struct WireResult {
    status: String,
    result: Option<WireSample>,
}

#[derive(Deserialize)]
struct WireSample {
    sample: Option<String>,
}
