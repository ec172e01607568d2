// Feedback on replies and "Copy as Markdown". Replies carry hx-disable (their content must not
// drive htmx), so the feedback form inside one is posted here and its answer swapped in.
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
    });
  }

  function bindFeedback() {
    document.addEventListener("submit", function (event) {
      var form = event.target.closest && event.target.closest("form.feedback-form");
      if (!form) return;
      event.preventDefault();
      var box = form.closest("[data-feedback]");
      var submitter = event.submitter;
      var data = new FormData(form);
      data.delete("rating");
      if (submitter && submitter.name) data.append(submitter.name, submitter.value);
      var refocus = submitter ? submitter.getAttribute("data-rating") : null;
      post(form.action, data)
        .then(function (response) {
          return response.text();
        })
        .then(function (html) {
          // The answer is the server's own rendering of this widget (escaped by the template).
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          var fresh = holder.firstElementChild;
          if (!fresh || !box.isConnected) return;
          box.replaceWith(fresh);
          nameFeedback();
          var again = refocus && fresh.querySelector('[data-rating="' + refocus + '"]');
          (again || fresh.querySelector(".feedback-button")).focus();
        })
        .catch(function () {
          var status = box.querySelector(".feedback-status");
          if (status) status.textContent = "Not saved: check your connection and try again.";
        });
    });
  }

  // Each reply's thumbs say which reply they rate ("Thumbs down for Claude's reply 3"),
  // counted in the order on screen, so a screen reader's list of buttons is not a column of
  // identical names.
  function nameFeedback() {
    var count = 0;
    document.querySelectorAll('#transcript article[data-role="assistant"]').forEach(function (article) {
      count += 1;
      var which = "Claude's reply " + count;
      var group = article.querySelector(".feedback-buttons");
      if (group) group.setAttribute("aria-label", "Rate " + which);
      var up = article.querySelector('.feedback-button[data-rating="up"]');
      if (up) up.setAttribute("aria-label", "Thumbs up for " + which);
      var down = article.querySelector('.feedback-button[data-rating="down"]');
      if (down) down.setAttribute("aria-label", "Thumbs down for " + which);
    });
  }

  function copy(text, button) {
    if (window.chatsite && window.chatsite.copyText) {
      window.chatsite.copyText(text, button);
    } else if (navigator.clipboard) {
      navigator.clipboard.writeText(text);
    }
  }

  // The whole thread as the Markdown export renders it, fetched when asked for so it is the
  // conversation as it is now, replies streamed since the page loaded included.
  function bindCopyMarkdown() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest && event.target.closest("[data-copy-markdown]");
      if (!button) return;
      fetch(button.getAttribute("data-copy-markdown"), { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error(String(response.status));
          return response.text();
        })
        .then(function (text) {
          copy(text, button);
        })
        .catch(function () {
          button.textContent = "Copy failed";
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindFeedback();
    bindCopyMarkdown();
    nameFeedback();
    // Replies arrive and change over the socket and over HTTP (older messages, large windows).
    document.body.addEventListener("htmx:wsAfterMessage", nameFeedback);
    document.body.addEventListener("htmx:afterSettle", nameFeedback);
  });
})();
