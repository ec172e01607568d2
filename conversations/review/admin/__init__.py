"""Admin review of transcripts, with accountability.

Content (message text, titles, system prompts) is shown only behind the reason gate, and every
read is logged with the staff member, the time, the reason (when CHAT_REVIEW_REASON_REQUIRED)
and whose content it was, and shown to the owner: the transcript view, exports, searches over
titles and message text (logged with their terms and every conversation they matched), and a
user's default system prompt. Lists and change pages show metadata and totals; titles appear in
lists only for staff with the `view_conversation_title` permission. There is no message admin:
a message is read in its transcript.
"""

# Importing registers each admin class with the site.
from conversations.review.admin import conversations, records  # noqa: F401
