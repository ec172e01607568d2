// Runs before first paint so a stored theme choice never flashes the other one.
(function () {
  "use strict";
  try {
    var theme = localStorage.getItem("chatsite-theme");
    if (theme === "light" || theme === "dark") {
      document.documentElement.setAttribute("data-theme", theme);
    }
  } catch (e) {
    // Storage can be unavailable (private mode); the system setting applies then.
  }
})();
