// Shows the map header's link to /operators only in a browser where an admin signed in there
// (the operators' page keeps the admin token in localStorage; drivers never see the link).
(function () {
  "use strict";
  var link = document.getElementById("operators-link");
  try {
    if (link && localStorage.getItem("parking-admin-token")) { link.hidden = false; }
  } catch (e) { /* storage disabled: no link, the page is still at its URL */ }
}());
