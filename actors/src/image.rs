//! The engine's image types: what an image provider is asked and what it answers.

use bytes::Bytes;

#[derive(Clone, Debug, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub seed: Option<u64>,
    /// `png` or `jpeg`.
    pub output_format: String,
    /// An image to start from (BFL's `image_prompt`), as bytes.
    pub image_prompt: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    pub bytes: Bytes,
    pub content_type: String,
    pub seed: Option<u64>,
}
