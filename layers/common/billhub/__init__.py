"""billhub: the shared domain of the bill aggregation service (shipped as the Lambda layer).

Handlers in ``functions/`` stay thin: they parse the event, build clients from settings, and call
one function from here. Nothing in this package reads ``os.environ`` or builds boto3 clients itself.
"""
