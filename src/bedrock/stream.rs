use std::collections::VecDeque;
use std::fmt;

use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_smithy_types::event_stream::RawMessage;

/// A Bedrock response stream whose first content event has already arrived.
///
/// The streaming services read events up to the first content event before they answer, so that
/// an error before any content can fall back to another model. Those events are kept here and
/// handed out first by [`recv`](Self::recv), in order; nothing is lost.
pub struct EventStream<T, E> {
    received: VecDeque<T>,
    receiver: EventReceiver<T, E>,
}

impl<T, E> EventStream<T, E> {
    /// Reads `receiver` until an event for which `is_content` holds, or the end of the stream. An
    /// error before that is returned, so that the attempt fails and can fall back.
    pub(crate) async fn until_content(
        mut receiver: EventReceiver<T, E>,
        is_content: impl Fn(&T) -> bool,
    ) -> Result<Self, SdkError<E, RawMessage>> {
        let mut received = VecDeque::new();
        while let Some(event) = receiver.recv().await? {
            let content = is_content(&event);
            received.push_back(event);
            if content {
                break;
            }
        }
        Ok(EventStream { received, receiver })
    }

    /// The next event, `None` at the end of the stream. An error after content has flowed is the
    /// caller's to handle: the answer so far came from this model, and no other model continues it.
    pub async fn recv(&mut self) -> Result<Option<T>, SdkError<E, RawMessage>> {
        match self.received.pop_front() {
            Some(event) => Ok(Some(event)),
            None => self.receiver.recv().await,
        }
    }
}

impl<T, E> fmt::Debug for EventStream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}
