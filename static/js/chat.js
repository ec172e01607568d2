// The chat page's behaviour that htmx does not cover: keyboard, either/or sampling sliders,
// clearing the composer only once the server has saved the message, Stop visibility, scrolling.
(function () {
  "use strict";

  var NEAR_BOTTOM_PX = 80;

  function $(id) {
    return document.getElementById(id);
  }

  function isStreaming() {
    return document.querySelector('#transcript article[data-status="streaming"]') !== null;
  }

  function updateStreamingState() {
    var streaming = isStreaming();
    var stop = $("stop");
    var send = $("send");
    if (stop) stop.hidden = !streaming;
    if (send) send.hidden = streaming;
  }

  // Sampling: Claude takes temperature or top_p, never both. Moving one slider selects it.
  function setSampling(mode) {
    var sampling = $("sampling");
    if (!sampling) return;
    sampling.value = mode;
    var reasoningOn = $("reasoning_effort") && $("reasoning_effort").value !== "off";
    document.querySelectorAll("[data-sampling-control]").forEach(function (control) {
      var name = control.getAttribute("data-sampling-control");
      var inactive = mode !== name || (name === "temperature" && reasoningOn);
      control.classList.toggle("control--inactive", inactive);
    });
    var hint = $("sampling-hint");
    if (hint) {
      if (mode === "default") hint.textContent = "Model defaults: neither temperature nor Top P is sent.";
      else if (mode === "temperature" && reasoningOn) hint.textContent = "With reasoning on, temperature is not sent (thinking uses 1).";
      else if (mode === "temperature") hint.textContent = "Sending temperature; Top P is not sent.";
      else hint.textContent = "Sending Top P; temperature is not sent.";
    }
  }

  function bindControls() {
    var temperature = $("temperature");
    var topP = $("top_p");
    var reasoning = $("reasoning_effort");
    if (!temperature || !topP) return;
    temperature.addEventListener("input", function () {
      $("temperature-value").textContent = Number(temperature.value).toFixed(2);
      setSampling("temperature");
    });
    topP.addEventListener("input", function () {
      $("top_p-value").textContent = Number(topP.value).toFixed(2);
      setSampling("top_p");
    });
    reasoning.addEventListener("change", function () {
      setSampling($("sampling").value);
    });
    $("reset-sampling").addEventListener("click", function () {
      temperature.value = "1";
      topP.value = "1";
      $("temperature-value").textContent = "1.00";
      $("top_p-value").textContent = "1.00";
      setSampling("default");
    });
    setSampling($("sampling").value);
  }

  function autoGrow(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = Math.min(textarea.scrollHeight, 320) + "px";
  }

  function bindComposer() {
    var form = $("composer");
    var textarea = $("message");
    if (!form || !textarea) return;
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (!isStreaming() && textarea.value.trim() !== "") form.requestSubmit();
      }
    });
    textarea.addEventListener("input", function () {
      autoGrow(textarea);
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && isStreaming()) {
        $("stop").click();
      } else if (event.key === "/" && document.activeElement === document.body) {
        event.preventDefault();
        textarea.focus();
      }
    });
  }

  function newToken() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function bindSocket() {
    var pendingToken = null;
    var transcript = $("transcript");
    var followStream = true;

    document.body.addEventListener("htmx:wsConfigSend", function (event) {
      var params = event.detail.parameters;
      if (params.action === "send") {
        pendingToken = newToken();
        params.client_token = pendingToken;
      }
    });

    document.body.addEventListener("htmx:wsBeforeMessage", function () {
      var scroller = document.scrollingElement;
      followStream = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
    });

    document.body.addEventListener("htmx:wsAfterMessage", function () {
      var ack = $("composer-ack");
      if (ack && pendingToken && ack.getAttribute("data-token") === pendingToken) {
        pendingToken = null;
        $("message").value = "";
        autoGrow($("message"));
        var hint = document.querySelector(".empty-hint");
        if (hint) hint.remove();
      }
      updateStreamingState();
      if (followStream && transcript) {
        window.scrollTo(0, document.scrollingElement.scrollHeight);
      }
    });

    document.body.addEventListener("htmx:wsClose", function () {
      document.body.classList.add("socket-closed");
    });
    document.body.addEventListener("htmx:wsOpen", function () {
      document.body.classList.remove("socket-closed");
    });
  }

  function bindCopyButtons() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest(".copy-code");
      if (!button) return;
      var block = button.closest(".codeblock");
      var pre = block && block.querySelector("pre");
      if (!pre || !navigator.clipboard) return;
      navigator.clipboard.writeText(pre.innerText).then(function () {
        button.textContent = "Copied";
        setTimeout(function () {
          button.textContent = "Copy";
        }, 1500);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindControls();
    bindComposer();
    bindSocket();
    bindCopyButtons();
    updateStreamingState();
    window.scrollTo(0, document.scrollingElement.scrollHeight);
  });
})();
