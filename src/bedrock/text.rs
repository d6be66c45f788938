//! Plain text in and out of Converse, for the common case of one user turn and a text answer.

use aws_sdk_bedrockruntime::error::BuildError;
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};

/// A user turn holding `text`, for the messages of a Converse input.
///
/// ```
/// use tower_model_fallback::bedrock::user_message;
///
/// let message = user_message("hello")?;
/// assert_eq!(message.content()[0].as_text().unwrap(), "hello");
/// # Ok::<(), aws_sdk_bedrockruntime::error::BuildError>(())
/// ```
pub fn user_message(text: impl Into<String>) -> Result<Message, BuildError> {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
}

/// The text of a Converse answer: every text block of the output message, joined. Empty when the
/// answer has no text (a tool call, say).
///
/// ```
/// use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
/// use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, ConverseOutput as Output, Message, StopReason};
/// use tower_model_fallback::bedrock::converse_text;
///
/// let message = Message::builder()
///     .role(ConversationRole::Assistant)
///     .content(ContentBlock::Text("Hello".into()))
///     .content(ContentBlock::Text(", world".into()))
///     .build()?;
/// let output = ConverseOutput::builder()
///     .output(Output::Message(message))
///     .stop_reason(StopReason::EndTurn)
///     .build()?;
/// assert_eq!(converse_text(&output), "Hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn converse_text(output: &ConverseOutput) -> String {
    let Some(message) = output.output().and_then(|o| o.as_message().ok()) else {
        return String::new();
    };
    message
        .content()
        .iter()
        .filter_map(|block| block.as_text().ok())
        .map(String::as_str)
        .collect()
}
