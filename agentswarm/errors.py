"""The project's exception tree."""


class SwarmError(Exception):
    """Root of every AgentSwarm error."""


class ConfigError(SwarmError):
    """A missing or invalid setting; the message is one line naming the variable."""


class ServiceUnavailable(SwarmError):
    """Postgres or Redis does not answer."""


class IllegalTransition(SwarmError):
    """A task state change that the state machine does not allow."""


class BudgetExceeded(SwarmError):
    """A run reached one of its budgets."""


class TaskMissing(SwarmError):
    """A message or request named a task that no row holds."""


class BadCall(SwarmError, TypeError):
    """A Celery task called with arguments of the wrong shape (by hand, e.g. `celery call`)."""


class BadRequest(SwarmError, ValueError):
    """A request (a person's, or a model's proposal) that breaks a rule or names what is not there; the message says
    which. Celery tasks list it in `throws`: an expected failure, logged in one line."""
