// Reply actions (Retry) and the client-side half of the message length limit.
// Messages carry hx-disable, so their buttons cannot use ws-send themselves: a click is
// delegated to the hidden #reply-actions form, which htmx sends over the chat socket.
(function () {
  "use strict";

  function showComposerError(text) {
    var error = document.getElementById("composer-error");
    if (error) error.textContent = text;
  }

  var pressed = null;

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-reply-action]");
    var form = document.getElementById("reply-actions");
    if (!button || !form) return;
    form.elements.action.value = button.getAttribute("data-reply-action");
    form.elements.message_id.value = button.getAttribute("data-message-id");
    // Disabled against double clicks; the accepted action replaces the whole message.
    button.disabled = true;
    pressed = button;
    form.requestSubmit();
  });

  // A refused action (its reason is shown above the composer) leaves the button in place.
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (pressed && pressed.isConnected) pressed.disabled = false;
    pressed = null;
  });

  // The server refuses over-long messages too; checking here first keeps a huge paste from
  // hitting the server's websocket frame limit, which would drop the socket instead.
  document.addEventListener("htmx:wsConfigSend", function (event) {
    var params = event.detail.parameters;
    var textarea = document.getElementById("message");
    if (!textarea || params.action !== "send" || typeof params.message !== "string") return;
    var max = parseInt(textarea.getAttribute("data-max-chars"), 10);
    if (max && params.message.length > max) {
      event.preventDefault();
      showComposerError(
        "That message is " + params.message.length.toLocaleString("en") +
        " characters long; the limit is " + max.toLocaleString("en") +
        ". Shorten it or split it into parts. Nothing was sent."
      );
    }
  });
})();
