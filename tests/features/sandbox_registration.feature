Feature: An integration engineer registers the service in a CDS Hooks sandbox
  As an integration engineer at a hospital
  I want to point a CDS Hooks client (sandbox or EHR test system) at the discovery URL
  So that I can see the services, call them from a browser-based client and get cards back

  Scenario: Discovery, CORS preflight and a hook with prefetch
    Given the service runs with the sandbox origin allowed by CORS
    When the browser sends a CORS preflight for the discovery endpoint
    Then the preflight allows GET, POST and the Authorization header from that origin
    When the client calls discovery with a signed JWT
    Then it lists the order-select, order-sign and patient-view services
    When the client sends the order-select hook with the ImagingStudy prefetched
    Then a conformant card comes back
