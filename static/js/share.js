// Share dialog (open on load, close, copy the link) and copy buttons on the public shared page.
(function () {
  "use strict";

  function dialog() {
    return document.getElementById("share-dialog");
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var box = dialog();
    if (!box || event.target.id !== "share-dialog-body") return;
    if (!box.open) box.showModal();
    // Right after Create link, the link is what the owner came for: select it for Ctrl+C.
    var link = document.getElementById("share-url");
    if (link && box.querySelector(".share-notice")) link.select();
  });

  // The header's "More" menu closes when the user clicks anywhere else.
  document.addEventListener("click", function (event) {
    document.querySelectorAll(".chat-menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  document.addEventListener("click", function (event) {
    var close = event.target.closest("[data-share-close]");
    if (close && dialog()) {
      dialog().close();
      return;
    }
    var copy = event.target.closest("[data-copy-from]");
    if (copy) {
      var input = document.getElementById(copy.getAttribute("data-copy-from"));
      if (input) window.chatsite.copyText(input.value, copy, input);
      return;
    }
    // The chat page binds its own code-copy buttons; the shared page has no chat.js.
    var code = event.target.closest(".page-shared .copy-code");
    if (code) {
      var pre = code.closest(".codeblock").querySelector("pre");
      if (pre) window.chatsite.copyText(pre.innerText, code);
    }
  });

  // A click on the backdrop (outside the dialog box) closes it, like Escape does.
  document.addEventListener("click", function (event) {
    var box = dialog();
    if (box && event.target === box) box.close();
  });
})();
