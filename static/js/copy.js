// One copyText for every Copy button (messages, code blocks, share links): writes to the
// clipboard and says "Copied" on the button for a moment. Without the Clipboard API (plain http
// on a LAN) it selects `fallbackInput`, if given, so Ctrl+C works.
(function () {
  "use strict";

  function copyText(text, button, fallbackInput) {
    if (!navigator.clipboard || !window.isSecureContext) {
      if (fallbackInput) fallbackInput.select();
      return;
    }
    navigator.clipboard.writeText(text).then(function () {
      if (button.hasAttribute("data-copied")) return;
      var label = button.textContent;
      button.setAttribute("data-copied", "");
      button.textContent = "Copied";
      setTimeout(function () {
        button.textContent = label;
        button.removeAttribute("data-copied");
      }, 1500);
    }, function () {});
  }

  window.chatsite = window.chatsite || {};
  window.chatsite.copyText = copyText;
})();
