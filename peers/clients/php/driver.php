<?php
// Issues the HTTP requests of the Laravel package `tingting/laravel` (its
// source: the GitHub repository ramonov/tingtingapi, src/TingTingClient.php)
// with Guzzle, as that package does, and prints what the package hands its
// caller as one JSON line. Written from a reading of that source; none of it
// is copied. The conformance tests (crates/otpgate/tests/api/php_client.rs)
// run it against a live otpgate.
//
//   php driver.php BASE_URL TOKEN METHOD [ARGUMENT...]
//
// BASE_URL is the package's `base_url` setting, path style with its trailing
// `/` (http://127.0.0.1:PORT/api/v1/). TOKEN is its `api_token` (or what
// `setToken` was given); an empty TOKEN sends no Authorization header. METHOD
// is one of the package's own method names below; JSON arguments are decoded
// into PHP arrays first, so integers stay integers as in a PHP caller's array.
//
// What the package does, and this does the same:
// - one Guzzle client with `base_uri` and the headers `Accept` and
//   `Content-Type`, both `application/json`, on every request (also on a GET
//   and on a POST without a body), plus `Authorization: Bearer TOKEN`;
// - bodies through Guzzle's `json` option (PHP's json_encode: `\uXXXX` for
//   non-ASCII, `\/` for `/`), filters through its `query` option;
// - a 2xx reply is json_decode'd to an array (`?? []` when it is not JSON);
// - any failure is a TingTingApiException whose message is the reply's
//   `message` when the reply has one, whose code is Guzzle's (the HTTP
//   status), and whose data is the decoded reply.
//
// Prints {"ok": true, "reply": ...} or {"ok": false, "exception":
// "TingTingApiException", "code": ..., "message": ..., "data": ...}.

require_once '/usr/share/php/GuzzleHttp/autoload.php';

use GuzzleHttp\Client;
use GuzzleHttp\Exception\GuzzleException;
use GuzzleHttp\Exception\RequestException;

const JSON_HEADERS = [
    'Accept' => 'application/json',
    'Content-Type' => 'application/json',
];

if ($argc < 4) {
    fwrite(STDERR, "usage: php driver.php BASE_URL TOKEN METHOD [ARGUMENT...]\n");
    exit(2);
}
[, $baseUrl, $token, $method] = $argv;
$arguments = array_slice($argv, 4);

/** A JSON argument as the PHP array a caller would pass. */
function json_argument(array $arguments, int $index): array
{
    $decoded = json_decode($arguments[$index] ?? '{}', true);
    if (!is_array($decoded)) {
        fwrite(STDERR, "argument " . ($index + 1) . " is not a JSON object\n");
        exit(2);
    }
    return $decoded;
}

/** The package's per-request headers. */
function headers_for(string $token): array
{
    $headers = JSON_HEADERS;
    if ($token !== '') {
        $headers['Authorization'] = 'Bearer ' . $token;
    }
    return $headers;
}

$client = new Client(['base_uri' => $baseUrl, 'headers' => JSON_HEADERS]);

// METHOD => [HTTP method, relative path, Guzzle options]
$calls = [
    'login' => fn () => ['POST', 'auths/login/', ['json' => [
        'email' => $arguments[0] ?? '',
        'password' => $arguments[1] ?? '',
    ]]],
    'refreshToken' => fn () => ['POST', 'auths/login/refresh/', ['json' => [
        'refresh' => $arguments[0] ?? '',
    ]]],
    'generateApiKeys' => fn () => ['POST', 'auths/generate-api-keys/', []],
    'getApiKeys' => fn () => ['GET', 'auths/get-api-keys/', []],
    'userDetail' => fn () => ['GET', 'auths/user-profile/', []],
    'sendOtp' => fn () => ['POST', 'auths/send/otp/', ['json' => json_argument($arguments, 0)]],
    'listSentOtps' => fn () => ['GET', 'auths/list/send-otps/', ['query' => json_argument($arguments, 0)]],
];
if (!isset($calls[$method])) {
    fwrite(STDERR, "unknown method $method; one of: " . implode(', ', array_keys($calls)) . "\n");
    exit(2);
}
[$verb, $path, $options] = $calls[$method]();
$options['headers'] = array_merge(headers_for($token), $options['headers'] ?? []);

try {
    $response = $client->request($verb, $path, $options);
    $out = ['ok' => true, 'reply' => json_decode($response->getBody()->getContents(), true) ?? []];
} catch (GuzzleException $e) {
    $message = $e->getMessage();
    $data = null;
    if ($e instanceof RequestException && $e->hasResponse()) {
        $data = json_decode($e->getResponse()->getBody()->getContents(), true);
        if (isset($data['message'])) {
            $message = $data['message'];
        }
    }
    $out = [
        'ok' => false,
        'exception' => 'TingTingApiException',
        'code' => $e->getCode(),
        'message' => $message,
        'data' => $data,
    ];
}
echo json_encode($out, JSON_PRESERVE_ZERO_FRACTION | JSON_UNESCAPED_SLASHES), "\n";
