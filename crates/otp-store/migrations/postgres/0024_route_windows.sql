-- Route windows: the balancer of every node reads each route's newest
-- finished OTPs (highest ids first) to measure how the route delivers. Only
-- adds an index: older binaries ignore it.
CREATE INDEX otps_route_id ON otps (route, id);
