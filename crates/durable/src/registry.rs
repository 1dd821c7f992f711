//! The registry: named, closed functions, erased to JSON in and out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flowstate_core::Failure;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctx::Ctx;

/// Why a function could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The function value is not zero-sized: it captures something (or is a function
    /// pointer). A durable function must be closed: whatever it captured would be different
    /// after a restart, and effects on it would happen again under replay. Pass data as the
    /// input, and reach the outside world through the context.
    #[error("durable function {name:?} captures {bytes} bytes: a durable function must be closed (capture nothing; take data as input, and reach the world through ctx)")]
    Captures {
        /// The function's name.
        name: String,
        /// Its size.
        bytes: usize,
    },
    /// The name is taken.
    #[error("a durable function named {name:?} is already registered")]
    Duplicate {
        /// The name.
        name: String,
    },
}

pub(crate) type BoxedRun = Pin<Box<dyn Future<Output = Result<serde_json::Value, Failure>>>>;

/// A function with its types erased: JSON in, JSON out.
pub(crate) trait Erased: Send + Sync {
    fn call(&self, ctx: Ctx, input: serde_json::Value) -> BoxedRun;
}

struct Typed<F, I, O> {
    function: F,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

impl<F, Fut, I, O> Erased for Typed<F, I, O>
where
    F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, Failure>> + 'static,
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
{
    fn call(&self, ctx: Ctx, input: serde_json::Value) -> BoxedRun {
        let input = serde_json::from_value::<I>(input);
        let future = input.map(|input| (self.function)(ctx, input));
        Box::pin(async move {
            let future = future.map_err(|e| Failure::new("InvalidInput", e.to_string()))?;
            let output = future.await?;
            serde_json::to_value(output)
                .map_err(|e| Failure::new("InvalidOutput", e.to_string()))
                .and_then(Failure::within_result_limit)
        })
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    functions: HashMap<String, Arc<dyn Erased>>,
}

impl Registry {
    pub(crate) fn register<F, Fut, I, O>(
        &mut self,
        name: &str,
        function: F,
    ) -> Result<(), RegistrationError>
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Failure>> + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
    {
        let bytes = std::mem::size_of::<F>();
        if bytes != 0 {
            return Err(RegistrationError::Captures {
                name: name.to_owned(),
                bytes,
            });
        }
        if self.functions.contains_key(name) {
            return Err(RegistrationError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.functions.insert(
            name.to_owned(),
            Arc::new(Typed {
                function,
                _types: std::marker::PhantomData,
            }),
        );
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Erased>> {
        self.functions.get(name).cloned()
    }
}
