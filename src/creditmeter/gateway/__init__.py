"""The gateway: credits enforced in front of model APIs, each configured model on the API its
upstream speaks (``api: openai`` or ``api: anthropic``), with no translation between them.
OpenAI's chat completions, Responses and embeddings (``POST /v1/chat/completions``,
``/v1/responses``, ``/v1/embeddings``), Anthropic's Messages (``POST /v1/messages``, and
``/v1/messages/count_tokens``, free) and ``GET /v1/models`` for both families of clients.

Every request: estimate what it may cost (its bytes as an upper bound of its prompt's tokens, plus
its max output tokens, at the model's prices) → reserve that → forward → settle the upstream's
reported usage (the rest of the hold goes back) → answer with the credits charged. The request's
id is the usage event's id, so a settle that is retried charges once. Upstream failure: the hold
is released and nothing is charged (502). A client that leaves mid-stream is charged for what it
was sent (or the upstream's own count, if it came before the client left), no more.

``upstream`` holds the configured models and their connection pools; ``call`` is one request's
reserve → forward → settle, whatever its protocol; ``relay`` passes a stream on event by event;
one module per protocol says what its requests mean and how its usage is read (``openai_chat``,
``openai_responses``, ``embeddings``, ``anthropic_messages``); ``errors`` has each protocol's
error shape; ``models`` lists what a key may call; ``routes`` mounts them (and ``lane`` takes
their requests past the app's routing); ``pending`` keeps
settles the database could not take; ``demo`` is the built-in offline upstream.
"""

from creditmeter.gateway.errors import GatewayError
from creditmeter.gateway.lane import GatewayLane
from creditmeter.gateway.openai_chat import approx_prompt_tokens, usage_of
from creditmeter.gateway.routes import gateway_routes
from creditmeter.gateway.upstream import Gateway, ModelRoute

__all__ = ["Gateway", "GatewayError", "GatewayLane", "ModelRoute", "approx_prompt_tokens", "gateway_routes",
           "usage_of"]
