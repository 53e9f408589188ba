Feature: A resident sees a displaced fracture, opens the heat map, and accepts the report
  As a resident ordering a hip X-ray in the emergency department
  I want to see at a glance that the AI suspects a displaced femoral-neck fracture, and why
  So that I can check the heat map, accept the preliminary report into the chart, and act

  Scenario: Critical card, heat map, accepted report
    Given the patient's AP pelvis shows a displaced right femoral-neck fracture
    When the resident selects a hip X-ray order
    Then a critical card names a suspected displaced right femoral-neck fracture, its Garden group and its probability
    When the resident opens the card's heat-map link
    Then the viewer shows the radiograph, the heat map and the disclaimer
    When the resident accepts the suggestion
    Then the EHR stores the preliminary DiagnosticReport on its FHIR server
    And the service counts the card as accepted
