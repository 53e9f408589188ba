Feature: The EHR sends feedback twice
  As the team monitoring the AI in production
  I want each clinician decision counted exactly once
  So that acceptance and override rates per indicator are true even when the EHR retries

  Scenario: The same acceptance arrives twice
    Given a physician received a hip fracture card
    When the EHR reports twice that the physician accepted the suggestion
    Then the service answers both with 200
    And the card is counted once as accepted in the metrics
