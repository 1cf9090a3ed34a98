"""The tags the runtime puts on promises (conventions of the Resonate SDKs)."""

#: A top-level invocation, which recovery finds and runs again.
INVOCATION_TAG = "resonate:invocation"
#: The id of the invocation that made a child, a timer or a promise.
PARENT_TAG = "resonate:parent"
#: The id of the top-level invocation a child belongs to.
ROOT_TAG = "resonate:root"
