"""Who may call what (bearer tokens against each route's least role) and
what a request may carry (body limits, the browser security headers)."""
