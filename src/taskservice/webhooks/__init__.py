"""Completion webhooks: a task's result POSTed to its callback_url, signed as the Standard
Webhooks specification says (``signing``), only ever to public addresses (``destinations``),
at least once, by the dispatcher threads (``dispatcher``) over a pinned connection (``sender``).
"""
