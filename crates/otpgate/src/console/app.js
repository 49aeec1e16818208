// The otpgate console's only script (served as /console/app.js; the CSP allows
// no inline script). Every page works without it: it only adds conveniences.
'use strict';
document.addEventListener('DOMContentLoaded', function () {
  // "Copy" next to a new key: copies the key and says so.
  document.querySelectorAll('button[data-copy]').forEach(function (button) {
    button.addEventListener('click', function () {
      var input = document.getElementById(button.getAttribute('data-copy'));
      if (!input) return;
      input.select();
      var done = function () { button.textContent = 'Copied'; };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(input.value).then(done, function () {});
      } else {
        done();
      }
    });
  });
  // The operator's routes page: its live part is fetched again every 5 s
  // (the server draws the chart; this only swaps the HTML in). Not while a
  // control in it has the focus, so a keyboard user is not moved.
  var live = document.querySelector('[data-live]');
  if (live && window.fetch) {
    setInterval(function () {
      if (live.contains(document.activeElement)) return;
      fetch(live.getAttribute('data-live'), { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) live.innerHTML = html; })
        .catch(function () {});
    }, 5000);
  }
  // The first field with an error gets the focus, so a keyboard user lands on it.
  var invalid = document.querySelector('[aria-invalid="true"]');
  if (invalid) invalid.focus();
});
