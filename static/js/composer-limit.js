// The client-side half of the message length limit.
(function () {
  "use strict";

  function showComposerError(text) {
    var error = document.getElementById("composer-error");
    if (error) error.textContent = text;
  }

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
