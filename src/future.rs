//! The response future of [`Fallback`](crate::Fallback): one attempt at a time.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::BoxError;
use tower_service::Service;
use tracing::Span;

use crate::classify::{ClassifyResponse, ErrorClass, OkIsSuccess};
use crate::error::{
    CoolingDown, DeadlineExceeded, FailedAttempt, FallbackError, RetryBudgetExhausted, UnknownModel,
};
use crate::handle::Handle;
use crate::layer::WhenAllCooling;
use crate::policy::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::request::{ModelId, ModelRequest, Route, TokenCost};
use crate::served::Served;
use crate::trail::Trail;

pin_project! {
    /// Response future of [`Fallback`](crate::Fallback).
    ///
    /// Dropping it cancels the attempt in flight; stats count the attempt and the request as cancelled.
    pub struct ResponseFuture<S, B, C = OkIsSuccess>
    where
        S: Service<ModelRequest<B>>,
    {
        #[pin]
        state: State<S::Future>,
        // The request's deadline, or while `Waiting` the end of the wait (which comes before the deadline).
        // Boxed so that requests without either carry no timer at all.
        timer: Option<Pin<Box<Sleep>>>,
        service: S,
        plan: Plan<B, C>,
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Between attempts: pick the next model.
        Idle,
        // A model is picked and its attempt admitted; waiting for the service to be ready. The pick
        // is kept so that a pending service never makes the policy decide (and admit) twice.
        Checking { model: usize },
        Calling { #[pin] future: F },
        // Every candidate is cooling and the layer waits for the soonest to end, holding no
        // readiness of the inner service.
        Waiting,
        // Decided before the first poll.
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<ModelRequest<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyResponse<S::Response>,
{
    /// Starts the first attempt right away on `service`, which the caller polled ready.
    #[inline]
    pub(crate) fn new(mut service: S, request: ModelRequest<B>, shared: Arc<Handle<C>>) -> Self {
        let span = tracing::debug_span!("model_fallback", request_id = %request.id());
        let guard = span.enter();
        let mut timer = request
            .deadline()
            .map(|deadline| Box::pin(sleep_until(deadline)));
        let mut plan = Plan::new(shared, request);
        // The common request, its first model available, goes straight to its call and is counted
        // with its attempt; the rest are counted before anything could end them. (Folding the two
        // into one match on `Step` measured 7-9 ns more per call in the happy-path benchmark.)
        let state = match plan.first_pick() {
            Some(Pick::Available(model)) => {
                plan.open(model);
                State::Calling {
                    future: plan.call(model, &mut service),
                }
            }
            picked => {
                plan.shared.stats.request();
                let step = match picked {
                    Some(picked) => plan.step_for(picked),
                    None => plan.next_step(),
                };
                match step {
                    Step::Attempt(model) => {
                        plan.admit(model);
                        State::Calling {
                            future: plan.call(model, &mut service),
                        }
                    }
                    Step::Wait(duration) => {
                        set_timer(&mut timer, Instant::now() + duration);
                        // Give back what `poll_ready` reserved (a concurrency permit, a buffer
                        // slot) rather than hold it while sleeping; the attempt after the wait
                        // polls readiness again.
                        service = service.clone();
                        State::Waiting
                    }
                    Step::Finish(error) => State::Failed { error: Some(error) },
                }
            }
        };
        drop(guard);
        ResponseFuture {
            state,
            timer,
            service,
            plan,
            span,
        }
    }
}

impl<S, B, C> Future for ResponseFuture<S, B, C>
where
    S: Service<ModelRequest<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyResponse<S::Response>,
{
    type Output = Result<Served<S::Response>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _enter = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => match future.poll(cx).map(|result| {
                    let classifier = &this.plan.shared.response_classifier;
                    result
                        .map_err(Into::into)
                        .and_then(|response| classifier.classify_response(response))
                }) {
                    Poll::Ready(Ok(response)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(this.plan.succeeded(response)));
                    }
                    Poll::Ready(Err(error)) => {
                        this.state.set(State::Idle);
                        if let Some(error) = this.plan.failed(error) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                    Poll::Pending => {
                        if timer_fired(this.timer, cx) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.plan.deadline_passed()));
                        }
                        return Poll::Pending;
                    }
                },
                StateProj::Checking { model } => {
                    let model = *model;
                    match this.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let future = this.plan.call(model, this.service);
                            this.state.set(State::Calling { future });
                        }
                        Poll::Ready(Err(error)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.plan.not_ready(error.into())));
                        }
                        Poll::Pending => {
                            if timer_fired(this.timer, cx) {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(this.plan.deadline_passed()));
                            }
                            return Poll::Pending;
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(timer) = this.timer.as_mut() {
                        ready!(timer.as_mut().poll(cx));
                    }
                    // Back to guarding the deadline, if the request has one.
                    match this.plan.request.deadline() {
                        Some(deadline) => set_timer(this.timer, deadline),
                        None => *this.timer = None,
                    }
                    this.state.set(State::Idle);
                }
                StateProj::Idle => match this.plan.next_step() {
                    Step::Attempt(model) => {
                        this.plan.admit(model);
                        this.state.set(State::Checking { model });
                    }
                    Step::Wait(duration) => {
                        set_timer(this.timer, Instant::now() + duration);
                        this.state.set(State::Waiting);
                    }
                    Step::Finish(error) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                },
                StateProj::Failed { error } => {
                    let error = error.take();
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error.unwrap_or_else(polled_after_completion)));
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    "model fallback future polled after completion".into()
}

fn timer_fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *timer = Some(Box::pin(sleep_until(at))),
    }
}

/// What to do next.
enum Step {
    Attempt(usize),
    Wait(Duration),
    Finish(BoxError),
}

/// The best untried model of a candidate order.
enum Pick {
    Available(usize),
    /// Every untried candidate is cooling; this one will be tried again soonest.
    Cooling(usize, Duration),
    Exhausted,
}

fn pick(
    policy: &dyn CooldownPolicy,
    cost: Option<TokenCost>,
    tried: u64,
    order: impl Iterator<Item = usize>,
) -> Pick {
    let mut soonest: Option<(usize, Duration)> = None;
    for model in order {
        if tried & (1 << model) != 0 {
            continue;
        }
        match policy.hint(model, cost) {
            Hint::Available => return Pick::Available(model),
            Hint::Cooling { remaining } => {
                if soonest.is_none_or(|(_, best)| remaining < best) {
                    soonest = Some((model, remaining));
                }
            }
        }
    }
    match soonest {
        Some((model, remaining)) => Pick::Cooling(model, remaining),
        None => Pick::Exhausted,
    }
}

/// The bookkeeping of one request across its attempts. Kept apart from the pinned future so that it
/// can be used before the future exists and so that its `Drop` can settle the stats.
struct Plan<B, C> {
    shared: Arc<Handle<C>>,
    request: ModelRequest<B>,
    /// Chain indexes already attempted in this pass.
    tried: u64,
    /// Chain indexes of models that rejected the request: later passes skip them.
    rejected: u64,
    /// The pass under way, from 1.
    pass: u32,
    /// Attempts made in the passes before this one.
    earlier: u32,
    max_attempts: u32,
    failed: Trail,
    /// The admitted attempt (picked, perhaps still waiting for readiness, or running): chain index
    /// and ticket. The policy hears exactly one outcome for it.
    current: Option<(usize, Ticket)>,
    finished: bool,
}

impl<B: Clone, C> Plan<B, C> {
    /// The id of the model at chain index `model` (always in range: indexes come from the chain).
    fn id(&self, model: usize) -> ModelId {
        self.shared.id(model)
    }

    fn new(shared: Arc<Handle<C>>, request: ModelRequest<B>) -> Self {
        let max_attempts = request
            .max_attempts()
            .map_or(shared.max_attempts, |n| n.min(shared.max_attempts));
        if let Some(budget) = &shared.retry_budget {
            budget.deposit();
        }
        Plan {
            shared,
            request,
            tried: 0,
            rejected: 0,
            pass: 1,
            earlier: 0,
            max_attempts,
            failed: Trail::Empty,
            current: None,
            finished: false,
        }
    }

    /// The common case, decided without the general checks: the first pick of a request on the default
    /// route without a deadline. `None` sends the request the long way.
    #[inline]
    fn first_pick(&self) -> Option<Pick> {
        if !matches!(self.request.route(), Route::Chain) || self.request.deadline().is_some() {
            return None;
        }
        let chain = 0..self.shared.chain.len();
        Some(pick(&*self.shared.policy, self.request.cost(), 0, chain))
    }

    #[inline(never)]
    fn next_step(&mut self) -> Step {
        if self
            .request
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Step::Finish(self.deadline_passed());
        }
        let attempts = self.attempts();
        if attempts >= self.max_attempts {
            return Step::Finish(self.exhausted());
        }
        let skip = self.tried | self.rejected;
        if self.tried != 0 && self.pass_done(skip) {
            return self.next_pass();
        }
        if attempts > 0
            && let Some(budget) = &self.shared.retry_budget
            && !budget.withdraw()
        {
            return Step::Finish(self.budget_exhausted());
        }
        let policy = &*self.shared.policy;
        let chain = &self.shared.chain;
        let cost = self.request.cost();
        let picked = match self.request.route() {
            Route::Chain => pick(policy, cost, skip, 0..chain.len()),
            Route::Order(models) => {
                let unknown = models.iter().find(|m| chain.index_of(m.as_str()).is_none());
                if models.is_empty() || unknown.is_some() {
                    let error = UnknownModel::new(unknown.cloned());
                    return Step::Finish(self.finish(error.into(), "unknown_model"));
                }
                pick(policy, cost, skip, self.candidates())
            }
            Route::Pinned(model) => match chain.index_of(model.as_str()) {
                // A pinned model is tried whatever its cooldown: the caller asked for it.
                Some(index) if skip & (1 << index) == 0 => Pick::Available(index),
                Some(_) => Pick::Exhausted,
                None => {
                    let unknown = UnknownModel::new(Some(model.clone()));
                    return Step::Finish(self.finish(unknown.into(), "unknown_model"));
                }
            },
        };
        self.step_for(picked)
    }

    /// The chain indexes of the request's route: what a pass walks through.
    fn candidates(&self) -> impl Iterator<Item = usize> + '_ {
        let chain = &self.shared.chain;
        let (all, listed, pinned) = match self.request.route() {
            Route::Chain => (Some(0..chain.len()), None, None),
            Route::Order(models) => {
                let listed = models.iter().filter_map(|m| chain.index_of(m.as_str()));
                (None, Some(listed), None)
            }
            Route::Pinned(model) => (None, None, chain.index_of(model.as_str())),
        };
        all.into_iter()
            .flatten()
            .chain(listed.into_iter().flatten())
            .chain(pinned)
    }

    /// The wait before the next pass: the backoff, doubled for each pass after the second, with
    /// equal jitter (between half and all of it) so that requests that failed together do not come
    /// back together. The jitter is a hash of the request id and the pass: no shared random state,
    /// and the same for a replayed request.
    fn pass_backoff(&self) -> Duration {
        let doublings = (self.pass - 1).min(16);
        let backoff = self.shared.pass_backoff.saturating_mul(1 << doublings);
        let mut hasher = DefaultHasher::new();
        (self.request.id(), self.pass).hash(&mut hasher);
        let half = backoff / 2;
        let jitter = half.as_nanos().saturating_mul(u128::from(hasher.finish())) >> 64;
        half.saturating_add(Duration::from_nanos(
            u64::try_from(jitter).unwrap_or(u64::MAX),
        ))
    }

    /// Attempts admitted over every pass.
    fn attempts(&self) -> u32 {
        self.earlier.saturating_add(self.tried.count_ones())
    }

    /// Whether every candidate has been tried in this pass, or `skip`ped.
    fn pass_done(&self, skip: u64) -> bool {
        match self.request.route() {
            // The common route, without walking it: after every failed attempt.
            Route::Chain => skip.count_ones() as usize >= self.shared.chain.len(),
            _ => self.candidates().all(|model| skip & (1 << model) != 0),
        }
    }

    /// Every candidate failed this pass: wait, then start the next one, if passes are left, some
    /// candidate did not reject the request, and it can start before the deadline.
    fn next_pass(&mut self) -> Step {
        let rejected = |model: usize| self.rejected & (1 << model) != 0;
        if self.pass >= self.shared.passes || self.candidates().all(rejected) {
            return Step::Finish(self.exhausted());
        }
        let wait = self.pass_backoff();
        if self
            .request
            .deadline()
            .is_some_and(|deadline| Instant::now() + wait >= deadline)
        {
            return Step::Finish(self.exhausted());
        }
        self.pass += 1;
        self.earlier = self.attempts();
        self.tried = 0;
        self.shared.stats.later_pass();
        tracing::debug!(
            pass = self.pass,
            wait_ms = wait.as_millis() as u64,
            "every candidate failed; waiting for the next pass"
        );
        Step::Wait(wait)
    }

    /// What to do with the model `pick` chose (hints may hand out capacity, so a pick is never
    /// redone). A model that started cooling while this request ran is skipped while another
    /// untried candidate is available; when none is, the request does what a new one would.
    #[inline(never)]
    fn step_for(&mut self, picked: Pick) -> Step {
        match picked {
            Pick::Available(model) => Step::Attempt(model),
            Pick::Exhausted => Step::Finish(self.exhausted()),
            Pick::Cooling(model, remaining) => match self.shared.when_all_cooling {
                WhenAllCooling::TryAnyway => Step::Attempt(model),
                WhenAllCooling::FailFast => Step::Finish(self.cooling_down(remaining)),
                WhenAllCooling::Wait => {
                    // An attempt must be able to start before the deadline, not at it.
                    let too_late = self
                        .request
                        .deadline()
                        .is_some_and(|deadline| Instant::now() + remaining >= deadline);
                    if too_late {
                        Step::Finish(self.cooling_down(remaining))
                    } else {
                        tracing::debug!(
                            wait_ms = remaining.as_millis() as u64,
                            "all models cooling; waiting"
                        );
                        Step::Wait(remaining)
                    }
                }
            },
        }
    }

    /// Admits an attempt on `model`: the policy hands out its ticket and from now on expects one
    /// outcome for it.
    #[inline]
    fn admit(&mut self, model: usize) {
        self.start(model);
        self.shared.stats.attempt(model);
    }

    /// Admits the request's first attempt, on `model` right away: the request and the attempt are
    /// counted as one.
    #[inline]
    fn open(&mut self, model: usize) {
        self.start(model);
        self.shared.stats.opened(model);
    }

    #[inline]
    fn start(&mut self, model: usize) {
        let ticket = self.policy().on_attempt(model, self.request.cost());
        self.current = Some((model, ticket));
        self.tried |= 1 << model;
    }

    /// Calls `service`, which was polled ready, for the admitted attempt on `model`.
    #[inline]
    fn call<S>(&mut self, model: usize, service: &mut S) -> S::Future
    where
        S: Service<ModelRequest<B>>,
    {
        let mut request = self.request.clone();
        request.set_model(self.id(model));
        service.call(request)
    }

    fn succeeded<R>(&mut self, response: R) -> Served<R> {
        let attempt = self.take_attempt();
        let model = attempt.map_or(0, |attempt| {
            self.policy().on_success(&attempt);
            self.shared.stats.success(attempt.model);
            attempt.model
        });
        self.finished = true;
        let id = self.id(model);
        tracing::debug!(model = %id, attempt = self.failed.as_slice().len() + 1, "attempt served");
        Served::new(response, id, mem::take(&mut self.failed))
    }

    /// Records a failed attempt; returns the request's error if it must not fall back.
    #[inline(never)]
    fn failed(&mut self, error: BoxError) -> Option<BoxError> {
        let attempt = self.take_attempt()?;
        let policy = &*self.shared.policy;
        let class = self.shared.classifier.classify(&*error);
        let cooldown = match class {
            ErrorClass::Throttled(throttle) => {
                self.shared.stats.throttle(attempt.model, throttle.limit);
                Some(policy.on_throttle(&attempt, throttle))
            }
            ErrorClass::Fatal => {
                self.shared.stats.request_error(attempt.model);
                policy.on_failure(&attempt, class);
                None
            }
            _ => {
                self.shared.stats.failure(attempt.model);
                policy.on_failure(&attempt, class);
                if class == ErrorClass::ModelRejected {
                    self.rejected |= 1 << attempt.model;
                }
                None
            }
        };
        let id = self.id(attempt.model);
        tracing::debug!(
            model = %id,
            class = %class,
            cooldown_ms = cooldown.map(|d| d.as_millis() as u64),
            "attempt failed"
        );
        self.failed
            .push(FailedAttempt::new(id, class, cooldown, error));
        (!class.falls_back()).then(|| self.exhausted())
    }

    /// The service of a later attempt failed to become ready: it is broken, so the request ends.
    /// The model was never called, so its attempt counts as cancelled.
    fn not_ready(&mut self, error: BoxError) -> BoxError {
        if let Some(model) = self.cancel_attempt() {
            let id = self.id(model);
            self.failed
                .push(FailedAttempt::new(id, ErrorClass::Fatal, None, error));
        }
        self.exhausted()
    }

    fn deadline_passed(&mut self) -> BoxError {
        self.cancel_attempt();
        let error = DeadlineExceeded::new(mem::take(&mut self.failed).into_vec());
        self.finish(error.into(), "deadline")
    }

    fn cooling_down(&mut self, retry_after: Duration) -> BoxError {
        let error = CoolingDown::new(retry_after, mem::take(&mut self.failed).into_vec());
        self.finish(error.into(), "cooling_down")
    }

    fn budget_exhausted(&mut self) -> BoxError {
        let error = RetryBudgetExhausted::new(mem::take(&mut self.failed).into_vec());
        self.finish(error.into(), "retry_budget")
    }

    fn exhausted(&mut self) -> BoxError {
        let fatal = self
            .failed
            .as_slice()
            .last()
            .is_some_and(|a| !a.class().falls_back());
        let error = FallbackError::new(mem::take(&mut self.failed).into_vec());
        self.finish(error.into(), if fatal { "fatal" } else { "exhausted" })
    }

    /// Ends the request with `error`. Events name the `reason` and never carry error text: inner
    /// errors may quote the request.
    fn finish(&mut self, error: BoxError, reason: &'static str) -> BoxError {
        self.finished = true;
        self.shared.stats.request_failed();
        tracing::debug!(reason, "request failed");
        error
    }
}

impl<B, C> Plan<B, C> {
    /// The policy as a trait object: calling through the `Arc`'s own impl would add a call.
    fn policy(&self) -> &dyn CooldownPolicy {
        &*self.shared.policy
    }

    /// Ends the running attempt, with what the policy needs to hear about it.
    fn take_attempt(&mut self) -> Option<AttemptInfo> {
        let (model, ticket) = self.current.take()?;
        Some(AttemptInfo::new(model, ticket, self.request.cost()))
    }

    /// Ends the admitted attempt without an outcome from the model; returns its chain index.
    fn cancel_attempt(&mut self) -> Option<usize> {
        let attempt = self.take_attempt()?;
        self.policy().on_cancelled(&attempt);
        self.shared.stats.attempt_cancelled(attempt.model);
        Some(attempt.model)
    }
}

impl<B, C> Drop for Plan<B, C> {
    fn drop(&mut self) {
        self.cancel_attempt();
        if !self.finished {
            self.shared.stats.request_cancelled();
        }
    }
}
