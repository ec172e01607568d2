// The chat page's behaviour that htmx does not cover (the controls are in controls.js): keyboard,
// clearing the composer only once the server has saved the message, Stop visibility, scrolling,
// Copy and opening the editor (Send edit is a ws-send form; regenerate, retry, continue and
// versions are ws-send buttons; only the part of an article holding message text carries
// hx-disable), theme, phone menu and dialogs.
(function () {
  "use strict";

  var NEAR_BOTTOM_PX = 80;
  var THEMES = ["system", "light", "dark"];
  var THEME_KEY = "chatsite-theme";

  function $(id) {
    return document.getElementById(id);
  }

  function isStreaming() {
    return document.querySelector('#transcript article[data-status="streaming"]') !== null;
  }

  // The transcript is not a live region (every 50 ms fragment would be read out): a reply is
  // announced once, when it completes, stops or fails, in #reply-announcer.
  var ANNOUNCE_MAX_CHARS = 2000;
  var streamingIds = [];

  function streamingArticleIds() {
    return Array.prototype.map.call(
      document.querySelectorAll('#transcript article[data-status="streaming"]'),
      function (article) {
        return article.id;
      }
    );
  }

  function announceFinished() {
    var announcer = $("reply-announcer");
    var finished = streamingIds.filter(function (id) {
      var article = document.getElementById(id);
      return article && article.getAttribute("data-status") !== "streaming";
    });
    streamingIds = streamingArticleIds();
    if (!announcer || finished.length === 0) return;
    var article = document.getElementById(finished[finished.length - 1]);
    var status = article.getAttribute("data-status");
    var body = article.querySelector(".message-body");
    var text = body ? body.textContent.trim() : "";
    if (text.length > ANNOUNCE_MAX_CHARS) text = text.slice(0, ANNOUNCE_MAX_CHARS) + "… (continues in the transcript)";
    var error = article.querySelector(".message-error");
    if (status === "error") announcer.textContent = "The reply failed. " + (error ? error.textContent : "");
    else if (status === "stopped") announcer.textContent = "Claude's reply, stopped: " + text;
    else announcer.textContent = "Claude replied: " + text;
  }

  function updateStreamingState() {
    var streaming = isStreaming();
    var stop = $("stop");
    var send = $("send");
    if (stop) stop.hidden = !streaming;
    if (send) send.hidden = streaming;
    document.body.classList.toggle("is-streaming", streaming);
  }

  function autoGrow(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = Math.min(textarea.scrollHeight, 320) + "px";
  }

  function isTyping(element) {
    if (!element) return false;
    var tag = element.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || element.isContentEditable;
  }

  function bindComposer() {
    var form = $("composer");
    var textarea = $("message");
    if (!form || !textarea) return;
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        // Not required while files are attached (attachments.js): they may go without words.
        if (!isStreaming() && (textarea.value.trim() !== "" || !textarea.required)) {
          form.requestSubmit();
        }
      }
    });
    textarea.addEventListener("input", function () {
      autoGrow(textarea);
    });
    document.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && (event.key === "k" || event.key === "K")) {
        event.preventDefault();
        openSearch();
      } else if (event.key === "Escape") {
        if (document.querySelector("dialog[open]")) return;
        if (isStreaming()) {
          event.preventDefault();
          $("stop").click();
        } else if (document.body.classList.contains("menu-open")) {
          setMenu(false);
        }
      } else if (event.key === "/" && !isTyping(document.activeElement)) {
        event.preventDefault();
        textarea.focus();
      }
    });
  }

  function newToken() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // Scrolling: only the transcript scrolls (the page itself never does), and it follows the
  // stream unless the reader has scrolled up; then it offers a way back. Whether the reader is
  // at the bottom comes from an IntersectionObserver on a sentinel after the last message, and
  // the scroll to follow the stream happens once per animation frame: no frame from the socket
  // reads layout (a forced synchronous layout per delta grew with the page).
  // The observer and scroll events report only at the next rendering, so a frame that lands
  // before that would otherwise drag a reader who just scrolled up back down. A reader's scroll
  // wins twice over: wheel, touch and keys mark the intent to leave at once (before the scroll
  // itself, which may be smooth and take several frames), and the queued follow-scroll checks
  // inside its animation frame whether the position moved up since the page last put it at
  // the end (a scrollbar drag or find-in-page gives no intent event).
  var atBottom = true;
  var leaving = false;
  var scrollQueued = false;
  var measureQueued = false;
  // Where the page last left the transcript (its scrollTop and scrollHeight then); null until
  // it has, or after the reader took over.
  var leftAt = null;

  var mark = null;

  // The one sentinel the observer watches: a swap that replaces the transcript's content
  // removes it, so the same element is put back (a new one would not be observed).
  function sentinel() {
    var transcript = $("transcript");
    if (!transcript) return null;
    if (!mark) {
      mark = document.createElement("div");
      mark.id = "transcript-end";
      mark.className = "transcript-end";
      mark.setAttribute("aria-hidden", "true");
    }
    // Swaps replace or append to the transcript: keep the sentinel last (O(1) when it is).
    if (transcript.lastElementChild !== mark) transcript.appendChild(mark);
    return mark;
  }

  function showJump() {
    var jump = $("jump-latest");
    if (jump && jump.hidden) jump.hidden = false;
  }

  function scrollToLatest() {
    var transcript = $("transcript");
    if (transcript) {
      transcript.scrollTop = transcript.scrollHeight;
      leftAt = { top: transcript.scrollTop, height: transcript.scrollHeight };
    }
    atBottom = true;
    leaving = false;
    var jump = $("jump-latest");
    if (jump) jump.hidden = true;
  }

  // The reader moved up from where the page left the transcript, by more than "near the end"
  // as the transcript stood then and stands now (a swap that shortens the transcript pulls
  // the position up too, but leaves it at the end): theirs wins over following the stream.
  function readerLeft(transcript) {
    if (leaving) return true;
    if (!leftAt) return false;
    var top = transcript.scrollTop;
    var view = transcript.clientHeight;
    return (
      top < leftAt.top - 1 &&
      leftAt.height - top - view > NEAR_BOTTOM_PX &&
      transcript.scrollHeight - top - view > NEAR_BOTTOM_PX
    );
  }

  function scrollToLatestSoon() {
    if (scrollQueued) return;
    scrollQueued = true;
    window.requestAnimationFrame(function () {
      scrollQueued = false;
      var transcript = $("transcript");
      if (transcript && readerLeft(transcript)) {
        atBottom = false;
        leftAt = null;
        showJump();
        return;
      }
      scrollToLatest();
    });
  }

  function leave() {
    leaving = true;
    atBottom = false;
  }

  // After any scroll, inside the next animation frame (where layout is due anyway): the reader
  // is following again once back near the end, unless they just asked to go up.
  function measureSoon() {
    if (measureQueued) return;
    measureQueued = true;
    window.requestAnimationFrame(function () {
      measureQueued = false;
      var transcript = $("transcript");
      if (!transcript) return;
      var near = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight <= NEAR_BOTTOM_PX;
      if (!near) {
        atBottom = false;
        leaving = false;
        leftAt = null;
      } else if (!leaving) {
        atBottom = true;
        var jump = $("jump-latest");
        if (jump) jump.hidden = true;
      }
    });
  }

  var UP_KEYS = { ArrowUp: true, PageUp: true, Home: true };
  var DOWN_KEYS = { ArrowDown: true, PageDown: true, End: true };

  function bindScrolling() {
    var jump = $("jump-latest");
    var transcript = $("transcript");
    var end = sentinel();
    if (!jump || !transcript || !end) return;
    jump.addEventListener("click", function () {
      scrollToLatest();
      $("message").focus();
    });
    transcript.addEventListener("wheel", function (event) {
      if (event.deltaY < 0) leave();
      else if (event.deltaY > 0) leaving = false;
    }, { passive: true });
    transcript.addEventListener("touchmove", leave, { passive: true });
    transcript.addEventListener("keydown", function (event) {
      if (isTyping(event.target)) return;
      if (UP_KEYS[event.key] || (event.key === " " && event.shiftKey)) leave();
      else if (DOWN_KEYS[event.key]) leaving = false;
    });
    transcript.addEventListener("scroll", measureSoon, { passive: true });
    new IntersectionObserver(
      function (entries) {
        var seen = entries[entries.length - 1].isIntersecting;
        if (!seen) {
          atBottom = false;
        } else if (!leaving) {
          atBottom = true;
          jump.hidden = true;
        }
      },
      { root: transcript, rootMargin: "0px 0px " + NEAR_BOTTOM_PX + "px 0px" }
    ).observe(end);
  }

  // The Thinking section is open while the model thinks and folds away once the answer starts;
  // after that it is the reader's to open.
  function foldThinking() {
    document.querySelectorAll('#transcript article[data-status="streaming"] details.thinking[open]').forEach(function (details) {
      if (details.hasAttribute("data-folded")) return;
      var article = details.closest("article");
      var content = article && article.querySelector(".message-body");
      if (content && content.textContent.trim() !== "") {
        details.open = false;
        details.setAttribute("data-folded", "");
      }
    });
  }

  function bindSocket() {
    var pendingToken = null;
    var followStream = true;

    // The ws extension queues a frame sent while the socket is not open and sends it on open;
    // the reader is told so instead of wondering whether the click was lost.
    var socketOpen = false;
    var QUEUED_TEXT = "Connecting… it will be sent once connected.";

    document.body.addEventListener("htmx:wsOpen", function () {
      socketOpen = true;
      document.body.classList.remove("socket-closed");
      var error = $("composer-error");
      if (error && error.textContent === QUEUED_TEXT) showComposerError("");
    });

    document.body.addEventListener("htmx:wsConfigSend", function (event) {
      var params = event.detail.parameters;
      if (params.action === "send") {
        pendingToken = newToken();
        params.client_token = pendingToken;
      } else {
        showComposerError("");
      }
      if (!socketOpen) showComposerError(QUEUED_TEXT);
    });

    document.body.addEventListener("htmx:wsBeforeMessage", function () {
      followStream = atBottom;
    });

    document.body.addEventListener("htmx:wsAfterMessage", function (event) {
      // Most frames are deltas (a span of new text): only frames that bring messages or
      // rendered Markdown touch more than that text.
      var message = String((event.detail && event.detail.message) || "");
      var structural = message.indexOf("<article") !== -1 || message.indexOf("transcript") !== -1;
      var ack = $("composer-ack");
      if (ack && pendingToken && ack.getAttribute("data-token") === pendingToken) {
        pendingToken = null;
        $("message").value = "";
        // Measuring the emptied composer forces a layout; in the next frame's own layout it
        // costs nothing, and the turn's articles and first words (already on the wire) are
        // swapped in without waiting for it.
        window.requestAnimationFrame(function () {
          autoGrow($("message"));
        });
        // Sending is asking to see the reply: any earlier scroll up is over.
        leaving = false;
        leftAt = null;
        followStream = true;
      }
      if (structural) {
        sentinel();
        var hint = document.querySelector(".empty-hint");
        if (hint && document.querySelector("#transcript article")) hint.remove();
        updateStreamingState();
        announceFinished();
      }
      foldThinking();
      if (structural || message.indexOf("copy-code") !== -1) nameActions();
      var title = $("chat-title");
      var name = title ? title.textContent + " · chatsite" : "";
      if (name && document.title !== name) document.title = name;
      if (followStream) {
        scrollToLatestSoon();
      } else {
        showJump();
      }
    });

    // A transcript too large for one socket message is loaded over HTTP instead: the streaming
    // state and scroll position follow it as they follow socket frames.
    document.body.addEventListener("htmx:afterSwap", function (event) {
      if (event.detail.target && event.detail.target.id === "transcript") {
        sentinel();
        updateStreamingState();
        if (followStream) scrollToLatestSoon();
      }
    });

    document.body.addEventListener("htmx:wsClose", function () {
      socketOpen = false;
      document.body.classList.add("socket-closed");
    });
  }

  function showComposerError(text) {
    var error = $("composer-error");
    if (error) error.textContent = text;
  }

  function rawContent(article) {
    var template = article.querySelector("template.message-raw");
    return template ? template.content.textContent : "";
  }

  // The editor is the message's own <template class="message-editor">: an htmx ws-send form
  // whose hx-vals carry the action and message id and whose inputs carry the text and the files
  // to keep, so the frame is built by htmx like every other message action.
  function openEditor(article) {
    if (article.querySelector(".edit-box")) return;
    var template = article.querySelector("template.message-editor");
    if (!template) return;
    var box = template.content.firstElementChild.cloneNode(true);
    var textarea = box.querySelector("textarea");
    textarea.value = rawContent(article);
    article.classList.add("is-editing");
    // After the text block, not inside it: htmx leaves that block alone (hx-disable).
    article.querySelector(".message-text").after(box);
    htmx.process(box);
    textarea.addEventListener("input", function () {
      autoGrow(textarea);
    });
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        box.requestSubmit();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        closeEditor(article);
      }
    });
    autoGrow(textarea);
    textarea.focus();
  }

  function closeEditor(article) {
    var box = article.querySelector(".edit-box");
    if (box) box.remove();
    article.classList.remove("is-editing");
    // Back to the button that opened the editor, so the keyboard user is where they were.
    var edit = article.querySelector('[data-action="edit"]');
    if (edit) edit.focus();
  }

  // An edit needs words or at least one file kept: a message may be its files alone.
  function bindEditForms() {
    document.body.addEventListener("htmx:wsConfigSend", function (event) {
      var box = event.target.closest && event.target.closest(".edit-box");
      if (!box) return;
      var text = box.querySelector("textarea").value;
      if (text.trim() === "" && !box.querySelector("input[type=checkbox]:checked")) {
        event.preventDefault();
        box.querySelector("textarea").focus();
      }
    });
  }

  // A reply too long to show whole comes in windows of plain text: each click appends the
  // next one as a text node (never as HTML), so the page only grows when the reader asks.
  function showMore(article, button) {
    var url = button.getAttribute("data-url");
    button.disabled = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (part) {
        var body = article.querySelector(".message-body");
        body.appendChild(document.createTextNode(part.text));
        var label = article.querySelector(".message-window-label");
        if (label) label.textContent = "This reply is long: showing the first " + part.shown + " of " + part.total + " characters, as plain text.";
        if (part.shown >= part.total) {
          button.remove();
        } else {
          button.setAttribute("data-url", url.replace(/start=\d+/, "start=" + part.shown));
          button.disabled = false;
        }
      })
      .catch(function () {
        button.disabled = false;
        showComposerError("Could not load more of that reply; try again.");
      });
  }

  function bindMessageActions() {
    document.addEventListener("click", function (event) {
      var codeCopy = event.target.closest(".copy-code");
      if (codeCopy) {
        var block = codeCopy.closest(".codeblock");
        var pre = block && block.querySelector("pre");
        if (pre) window.chatsite.copyText(pre.innerText, codeCopy);
        return;
      }
      var button = event.target.closest("#transcript [data-action]");
      if (!button || button.disabled) return;
      var article = button.closest("article");
      var action = button.getAttribute("data-action");
      if (action === "copy") {
        window.chatsite.copyText(rawContent(article), button);
      } else if (action === "edit") {
        openEditor(article);
      } else if (action === "edit-cancel") {
        closeEditor(article);
      } else if (action === "more") {
        showMore(article, button);
      }
      // Send edit, Regenerate, Retry, Continue and the version switcher are htmx (ws-send).
    });
  }

  // Every Copy / Edit / Copy code button says which message it acts on ("Copy Claude's reply
  // 3"), counted in the order on screen, so a screen reader's list of buttons is not a column
  // of identical names.
  function nameActions() {
    var counts = { user: 0, assistant: 0 };
    document.querySelectorAll("#transcript article[data-role]").forEach(function (article) {
      var role = article.getAttribute("data-role");
      if (!(role in counts)) return;
      counts[role] += 1;
      var which = role === "user" ? "your prompt " + counts[role] : "Claude's reply " + counts[role];
      var copy = article.querySelector('[data-action="copy"]');
      if (copy) copy.setAttribute("aria-label", "Copy " + which);
      var edit = article.querySelector('[data-action="edit"]');
      if (edit) edit.setAttribute("aria-label", "Edit " + which);
      [["regenerate", "Regenerate "], ["retry", "Retry "], ["continue", "Continue "]].forEach(function (pair) {
        var button = article.querySelector('[data-action="' + pair[0] + '"]');
        if (button) button.setAttribute("aria-label", pair[1] + which);
      });
      var codes = article.querySelectorAll(".copy-code");
      codes.forEach(function (button, index) {
        var block = codes.length > 1 ? " (block " + (index + 1) + ")" : "";
        button.setAttribute("aria-label", "Copy code from " + which + block);
      });
    });
  }

  // Theme: the system's unless chosen; the choice is remembered (theme.js applies it early).
  function currentTheme() {
    var theme = document.documentElement.getAttribute("data-theme");
    return theme === "light" || theme === "dark" ? theme : "system";
  }

  function showTheme() {
    var button = $("theme-toggle");
    if (!button) return;
    var theme = currentTheme();
    var names = { system: "System", light: "Light", dark: "Dark" };
    button.textContent = "Theme: " + names[theme];
    button.setAttribute("aria-label", "Theme: " + names[theme] + " (change)");
  }

  function bindTheme() {
    var button = $("theme-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      var next = THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length];
      try {
        if (next === "system") localStorage.removeItem(THEME_KEY);
        else localStorage.setItem(THEME_KEY, next);
      } catch (e) {
        // Storage unavailable: the choice lasts for this page only.
      }
      if (next === "system") document.documentElement.removeAttribute("data-theme");
      else document.documentElement.setAttribute("data-theme", next);
      showTheme();
    });
    showTheme();
  }

  // The phone layout hides the sidebar behind a Menu button.
  function setMenu(open) {
    var toggle = $("menu-toggle");
    document.body.classList.toggle("menu-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", open ? "true" : "false");
    document.querySelectorAll(".sidebar-backdrop").forEach(function (backdrop) {
      backdrop.hidden = !open;
    });
    if (open) {
      var first = document.querySelector("#sidebar .new-chat");
      if (first) first.focus();
    }
  }

  function menuIsCollapsible() {
    var toggle = $("menu-toggle");
    return toggle && getComputedStyle(toggle).display !== "none";
  }

  function openSearch() {
    if (menuIsCollapsible()) setMenu(true);
    var search = $("search");
    if (search) {
      search.focus();
      search.select();
    }
  }

  function bindMenu() {
    var toggle = $("menu-toggle");
    if (!toggle) return;
    toggle.addEventListener("click", function () {
      setMenu(!document.body.classList.contains("menu-open"));
    });
    document.querySelectorAll("[data-menu-close]").forEach(function (element) {
      element.addEventListener("click", function () {
        setMenu(false);
        toggle.focus();
      });
    });
  }

  function bindOptions() {
    var toggle = $("options-toggle");
    if (!toggle) return;
    toggle.addEventListener("click", function () {
      var open = !document.body.classList.contains("options-open");
      document.body.classList.toggle("options-open", open);
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  function bindDialogs() {
    document.querySelectorAll("[data-dialog]").forEach(function (opener) {
      opener.addEventListener("click", function () {
        var dialog = $(opener.getAttribute("data-dialog"));
        if (!dialog) return;
        var menu = opener.closest("details");
        if (menu) menu.open = false;
        dialog.showModal();
        var input = dialog.querySelector("input[type=text]");
        if (input) input.select();
      });
    });
    document.querySelectorAll("[data-dialog-close]").forEach(function (closer) {
      closer.addEventListener("click", function () {
        closer.closest("dialog").close();
      });
    });
    // Only dialogs that say so close when their form succeeds (the share dialog stays open to
    // show the link it just made).
    document.body.addEventListener("htmx:afterRequest", function (event) {
      var dialog = event.detail.elt.closest && event.detail.elt.closest("dialog[data-close-on-success]");
      var error = $("rename-error");
      if (dialog && event.detail.successful && !(error && error.textContent.trim())) dialog.close();
    });
  }

  // Notices the user may dismiss stay dismissed (per notice, in this browser).
  function bindNotices() {
    document.querySelectorAll("[data-dismiss-key]").forEach(function (notice) {
      var key = "chatsite-dismissed-" + notice.getAttribute("data-dismiss-key");
      try {
        if (localStorage.getItem(key)) notice.hidden = true;
      } catch (e) {
        // Storage unavailable: the notice shows until dismissed on this page.
      }
      var close = notice.querySelector("[data-dismiss]");
      if (!close) return;
      close.addEventListener("click", function () {
        notice.hidden = true;
        try {
          localStorage.setItem(key, "1");
        } catch (e) {
          // As above.
        }
        var message = $("message");
        if (message) message.focus();
      });
    });
  }

  // A search result links to the message it matched (#msg-<id>): open the transcript there and
  // mark it, rather than at the end.
  function showLinkedMessage() {
    var match = /^#(msg-[0-9a-f-]{36})$/.exec(window.location.hash);
    var article = match && document.getElementById(match[1]);
    if (!article || !article.matches("#transcript article")) return;
    article.scrollIntoView({ block: "center" });
    article.classList.add("is-highlighted");
    article.addEventListener("animationend", function () {
      article.classList.remove("is-highlighted");
    }, { once: true });
  }

  // Deferred scripts run once the document is parsed but before htmx initialises on
  // DOMContentLoaded: start the transcript at the latest message now, so the "load older
  // messages" sentinel at its top is not already in view when htmx looks at it.
  scrollToLatest();

  document.addEventListener("DOMContentLoaded", function () {
    bindComposer();
    bindSocket();
    bindScrolling();
    bindMessageActions();
    bindEditForms();
    bindTheme();
    bindMenu();
    bindDialogs();
    bindOptions();
    bindNotices();
    updateStreamingState();
    streamingIds = streamingArticleIds();
    nameActions();
    document.body.addEventListener("htmx:afterSettle", function (event) {
      // Not after a delta's text lands in a reply's tail: only when messages or code blocks
      // may have come (labels count every message, so this is not per-frame work).
      var elt = event.detail && event.detail.elt;
      if (elt && elt.nodeType === 1 && (elt.matches("article, #transcript, .message-body") || elt.querySelector("article, .copy-code"))) {
        nameActions();
      }
    });
    scrollToLatest();
    showLinkedMessage();
  });
})();
