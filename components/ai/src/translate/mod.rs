//! Translation between OpenAI's chat completions and Anthropic's messages,
//! both ways: requests (`request`), whole answers (`response`) and streams
//! (`stream`).

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{
    anthropic_to_openai as anthropic_request_to_openai,
    openai_to_anthropic as openai_request_to_anthropic,
};
pub use response::{
    Usage, anthropic_to_openai as anthropic_answer_to_openai,
    openai_to_anthropic as openai_answer_to_anthropic,
};
pub use stream::{Flow, Translator};
